package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Cluster is a running kube-apiserver with its own etcd. From StartCluster nothing else of
// Kubernetes runs: objects are stored and served, but no controller acts on them. From
// StartRealisticCluster the controllers, the scheduler and kwok's fake kubelets run too.
type Cluster struct {
	// Config is an administrator's (system:masters) client configuration.
	Config *rest.Config
	// Client is a clientset for Config.
	Client kubernetes.Interface
	// Version is the Kubernetes version of the kube-apiserver.
	Version string

	host string
	ca   *authority
	dir  string
	// apiserver is the running kube-apiserver, started with bin and args.
	apiserver *process
	bin       string
	args      []string
	// kwok is the running kwok of a StartRealisticCluster, nil otherwise.
	kwok *process
	// env holds what StartCluster started.
	env *Env
}

// StartCluster starts etcd and kube-apiserver and waits until the API server is ready.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c, err := envFor(t).StartCluster(t.Context())
	check(t, err)
	return c
}

// StartCluster starts etcd and kube-apiserver and waits until the API server is ready.
func (e *Env) StartCluster(ctx context.Context) (*Cluster, error) {
	version, err := KubeVersion()
	if err != nil {
		return nil, fmt.Errorf("test environment: %w", err)
	}
	apiserverBin, err := lookBinary(filepath.Join(BinDir(), "kube-apiserver-"+version))
	if err != nil {
		return nil, err
	}
	etcdBin, err := lookBinary(filepath.Join(BinDir(), "etcd-"+EtcdVersion))
	if err != nil {
		return nil, err
	}
	dir, err := e.TempDir("cluster")
	if err != nil {
		return nil, err
	}
	etcdURL, err := e.startEtcd(ctx, etcdBin, dir)
	if err != nil {
		return nil, err
	}

	ca, err := newAuthority()
	if err != nil {
		return nil, fmt.Errorf("creating the test CA: %w", err)
	}
	files := map[string][]byte{"ca.crt": ca.certPEM}
	servingCert, servingKey, err := ca.issue(pkix.Name{CommonName: "kube-apiserver"}, true)
	if err != nil {
		return nil, fmt.Errorf("issuing the serving certificate: %w", err)
	}
	files["serving.crt"], files["serving.key"] = servingCert, servingKey
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("creating the service-account key: %w", err)
	}
	files["sa.key"] = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, fmt.Errorf("writing %s: %w", name, err)
		}
	}

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Version: version, host: fmt.Sprintf("https://127.0.0.1:%d", port), ca: ca, dir: dir, env: e}
	c.bin = apiserverBin
	c.args = []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--tls-cert-file=" + filepath.Join(dir, "serving.crt"),
		"--tls-private-key-file=" + filepath.Join(dir, "serving.key"),
		"--client-ca-file=" + filepath.Join(dir, "ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--profiling=false",
		// The kubernetes Service endpoint cannot be a loopback address; nothing here needs it.
		"--endpoint-reconciler-type=none",
	}
	if c.Config, err = c.userConfig("admin", "system:masters"); err != nil {
		return nil, err
	}
	c.Client = kubernetes.NewForConfigOrDie(c.Config)
	if err := c.startAPIServer(ctx, e); err != nil {
		return nil, err
	}
	// The default namespace is created by a post-start hook shortly after readiness.
	err = c.apiserver.ready(ctx, 30*time.Second, func(ctx context.Context) error {
		_, err := c.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// StopAPIServer stops the kube-apiserver (SIGTERM, then SIGKILL after 10 s); etcd, and
// so every object, stays.
func (c *Cluster) StopAPIServer() { c.apiserver.stop() }

// StartAPIServer starts the kube-apiserver again, on the same address with the same
// certificates and etcd, and waits until it is ready; it is stopped with the test.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	check(t, c.startAPIServer(t.Context(), envFor(t)))
}

// startAPIServer starts the kube-apiserver in e, and waits until it is ready. StartCluster
// calls it first.
func (c *Cluster) startAPIServer(ctx context.Context, e *Env) error {
	p, err := e.start("kube-apiserver", nil, nil, c.bin, c.args...)
	if err != nil {
		return err
	}
	c.apiserver = p
	httpClient, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		return fmt.Errorf("building the API server's HTTP client: %w", err)
	}
	return c.apiserver.ready(ctx, 90*time.Second, httpOK(httpClient, c.host+"/readyz"))
}

func (e *Env) startEtcd(ctx context.Context, bin, dir string) (string, error) {
	ports, err := freePorts(2)
	if err != nil {
		return "", err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	proc, err := e.start("etcd", nil, nil, bin,
		"--name=default",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return "", err
	}
	return clientURL, proc.ready(ctx, 30*time.Second, httpOK(http.DefaultClient, clientURL+"/health"))
}

// UserConfig returns a client configuration that authenticates as user, member of groups,
// with a client certificate; RBAC decides what it may do.
func (c *Cluster) UserConfig(t testing.TB, user string, groups ...string) *rest.Config {
	t.Helper()
	cfg, err := c.userConfig(user, groups...)
	check(t, err)
	return cfg
}

func (c *Cluster) userConfig(user string, groups ...string) (*rest.Config, error) {
	certPEM, keyPEM, err := c.ca.issue(pkix.Name{CommonName: user, Organization: groups}, false)
	if err != nil {
		return nil, fmt.Errorf("issuing a client certificate for %s: %w", user, err)
	}
	return &rest.Config{
		Host: c.host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.ca.certPEM,
			CertData: certPEM,
			KeyData:  keyPEM,
		},
		QPS:   200,
		Burst: 400,
	}, nil
}

// Kubeconfig writes a kubeconfig file for cfg and returns its path, for commands that take
// --kubeconfig.
func (c *Cluster) Kubeconfig(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	path, err := writeKubeconfig(filepath.Join(t.TempDir(), "kubeconfig"), cfg)
	check(t, err)
	return path
}

// KubeconfigFile writes a kubeconfig file for cfg in the cluster's directory and returns
// its path, for commands that take --kubeconfig.
func (c *Cluster) KubeconfigFile(cfg *rest.Config) (string, error) {
	f, err := os.CreateTemp(c.dir, "kubeconfig-")
	if err != nil {
		return "", fmt.Errorf("writing kubeconfig: %w", err)
	}
	f.Close()
	return writeKubeconfig(f.Name(), cfg)
}

func writeKubeconfig(path string, cfg *rest.Config) (string, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test", Namespace: "default"}
	kc.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", fmt.Errorf("writing kubeconfig: %w", err)
	}
	return path, nil
}

// authority is a throwaway certificate authority for one test cluster.
type authority struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newAuthority() (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "workerscale-test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// issue creates a certificate signed by the authority: for a server on 127.0.0.1, or for
// a client whose user and groups are the subject's common name and organizations.
func (a *authority) issue(subject pkix.Name, server bool) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// WorkerDeployment is a Deployment of one container named worker with the given requests
// and env vars, its pods labelled app=name: a queue worker fleet for tests.
func WorkerDeployment(namespace, name string, replicas int32, cpu, memory string, env ...corev1.EnvVar) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "worker", Image: "worker:1", Env: env,
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory)}},
				}}},
			},
		},
	}
}

// Concurrency is the seed's two concurrency env vars.
func Concurrency(global, tenant string) []corev1.EnvVar {
	return []corev1.EnvVar{{Name: "WORKER_CONCURRENCY", Value: global}, {Name: "DEFAULT_TENANT_CONCURRENCY", Value: tenant}}
}

// CreateDeployment creates d, and its namespace first when that does not exist yet.
func (c *Cluster) CreateDeployment(t testing.TB, d *appsv1.Deployment) {
	t.Helper()
	check(t, c.CreateDeploymentContext(t.Context(), d))
}

// CreateDeploymentContext creates d, and its namespace first when that does not exist yet.
func (c *Cluster) CreateDeploymentContext(ctx context.Context, d *appsv1.Deployment) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: d.Namespace}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", d.Namespace, err)
	}
	if _, err := c.Client.AppsV1().Deployments(d.Namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	return nil
}

// CompleteRollout does what the Deployment controller would, which StartCluster does not
// run: it reports the Deployment's current generation rolled out, every replica ready, at
// once. Prefer StartRealisticCluster, whose controller does it, and WaitForRollout; this is
// for the few tests whose timing a real rollout, which takes seconds, would change.
func (c *Cluster) CompleteRollout(t testing.TB, namespace, name string) {
	t.Helper()
	ctx := context.Background()
	d, err := c.Client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading deployment %s/%s: %v", namespace, name, err)
	}
	n := *d.Spec.Replicas
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
	if _, err := c.Client.AppsV1().Deployments(namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("reporting deployment %s/%s rolled out: %v", namespace, name, err)
	}
}
