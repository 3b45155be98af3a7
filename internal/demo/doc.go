// Package demo is workerscale's main job played for real, which `make demo` runs
// (hack/demo is its command line) and TestDemo checks under `make test`: a realistic
// cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok roll the
// first seed's render Deployment out), one real BullMQ Worker per Ready pod with the pod's
// WORKER_CONCURRENCY, BullMQ's exporter and the Workers' CPU and memory scraped by a real
// Prometheus, and the built `workerscale run` acting on the Deployment through a burst of
// the first seed's jobs, on rules.yaml (rules/examples/luneo-render.yaml compressed in
// time). Run prints the controller's decisions with their reasons as they come, then a
// summary (waits, cost, actions), and draws the run with the simulator's plotting.
//
// The components come from internal/testenv through its Env, which stops them all (each
// with its process group) and removes their files when the demo ends or is interrupted.
package demo
