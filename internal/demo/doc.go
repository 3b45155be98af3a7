// Package demo is the walkthrough `make demo` runs: the built workerscale binary against
// a real Prometheus scraping a fixture BullMQ fleet and a real kube-apiserver holding the
// first seed's render Deployment, in dry-run first and then for real through a queue burst.
// It lives in a test (TestDemo) because the real components are started by the test
// environment harness; `make test` runs it too, so the demo cannot rot.
//
// TestClosedLoop closes the loop for real: a realistic cluster (kube-controller-manager,
// kube-scheduler and kwok roll the Deployment out), one real BullMQ Worker per Ready pod,
// BullMQ's exporter scraped by Prometheus, and `workerscale run` acting on the Deployment
// through a burst of the first seed's jobs.
package demo
