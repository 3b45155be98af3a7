package testenv

import (
	"fmt"
	"os"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The prometheus-operator release whose CRDs (monitoring.coreos.com) the tests install:
// its Go module carries them under example/prometheus-operator-crd, so the Go module proxy
// serves them, and the tests read them from the module cache as released (nothing of them
// is copied into this repository). v0.85.0 is the release the proxy serves as the module's
// latest.
const (
	PrometheusOperatorModule  = "github.com/prometheus-operator/prometheus-operator"
	PrometheusOperatorVersion = "v0.85.0"
	// monitoringCRDDir holds one CRD manifest per file, monitoring.coreos.com_<plural>.yaml.
	monitoringCRDDir = "example/prometheus-operator-crd"
)

// MonitoringCRD is the prometheus-operator's CustomResourceDefinition of plural (such as
// "servicemonitors" or "prometheusrules") in group monitoring.coreos.com, of release
// PrometheusOperatorVersion, read from the module cache (`go mod download` fetches the
// module when it is not there). When it cannot be had the test ends: a failure under
// `make test`, a skip otherwise.
func MonitoringCRD(t testing.TB, plural string) *unstructured.Unstructured {
	t.Helper()
	name := plural + ".monitoring.coreos.com"
	file := monitoringCRDDir + "/monitoring.coreos.com_" + plural + ".yaml"
	crd, err := moduleCRD(t.Context(), PrometheusOperatorModule, PrometheusOperatorVersion, file, name)
	if err != nil {
		msg := fmt.Sprintf("test environment: the CRD %s of %s@%s: %v", name, PrometheusOperatorModule, PrometheusOperatorVersion, err)
		if os.Getenv(RequiredEnv) == "required" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return crd
}
