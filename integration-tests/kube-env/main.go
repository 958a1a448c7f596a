// Command kube-env runs a real Kubernetes control plane for iter8's
// integration tests: the official kube-apiserver (k8s.io/kubernetes, compiled
// in) backed by an embedded etcd (go.etcd.io/etcd/server/v3/embed), both on
// loopback ports, with freshly generated certificates, client-certificate
// authentication for an admin identity in system:masters, and Node,RBAC
// authorization.
//
// It writes a kubeconfig for the admin identity to --kubeconfig once /readyz
// answers "ok", prints a line starting with "kube-env: ready" on stdout, and
// runs until SIGINT or SIGTERM. On shutdown it stops the apiserver, then etcd,
// and removes its data directory and the kubeconfig it wrote.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apiserver/pkg/util/feature"
	basecompatibility "k8s.io/component-base/compatibility"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

// kubernetesVersion is the k8s.io/kubernetes release compiled in (see go.mod).
const kubernetesVersion = "v1.37.2"

type config struct {
	kubeconfig     string
	dataDir        string
	keepData       bool
	exitOnStdinEOF bool
	bindAddress    string
	port           int
	etcdClientPort int
	etcdPeerPort   int
	readyTimeout   time.Duration
	stopTimeout    time.Duration
	apiserverArgs  []string
}

func main() {
	os.Exit(run())
}

func parseFlags() (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("kube-env", flag.ContinueOnError)
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "path to write the admin kubeconfig to once ready (required; removed on exit)")
	fs.StringVar(&c.dataDir, "data-dir", "", "directory for etcd data and certificates; must not exist or be empty (default: a new temporary directory); removed on exit")
	fs.BoolVar(&c.keepData, "keep-data", false, "do not remove the data directory on exit (for debugging)")
	fs.BoolVar(&c.exitOnStdinEOF, "exit-on-stdin-close", false, "shut down when stdin reaches end of file, e.g. when the parent process holding its write end exits")
	fs.StringVar(&c.bindAddress, "bind-address", "127.0.0.1", "loopback address to listen on")
	fs.IntVar(&c.port, "port", 0, "kube-apiserver secure port (0: pick a free one)")
	fs.IntVar(&c.etcdClientPort, "etcd-client-port", 0, "etcd client port (0: pick a free one)")
	fs.IntVar(&c.etcdPeerPort, "etcd-peer-port", 0, "etcd peer port (0: pick a free one)")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", 3*time.Minute, "give up if /readyz is not ok within this time")
	fs.DurationVar(&c.stopTimeout, "stop-timeout", 30*time.Second, "after a stop signal, exit anyway after this long")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kube-env --kubeconfig PATH [flags] [-- extra kube-apiserver flags]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return nil, err
	}
	c.apiserverArgs = fs.Args()
	if c.kubeconfig == "" {
		return nil, errors.New("--kubeconfig is required")
	}
	ip := net.ParseIP(c.bindAddress)
	if ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("--bind-address %q is not a loopback IP address", c.bindAddress)
	}
	abs, err := filepath.Abs(c.kubeconfig)
	if err != nil {
		return nil, err
	}
	c.kubeconfig = abs
	return c, nil
}

func run() int {
	c, err := parseFlags()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "kube-env: %v\n", err)
		return 2
	}

	// Whoever reads our output may go away first (a test process that ends
	// with us still running): a write to a closed stdout/stderr must then
	// fail quietly, not kill us by SIGPIPE before we have cleaned up.
	signal.Ignore(syscall.SIGPIPE)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if c.exitOnStdinEOF {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			fmt.Fprintln(os.Stderr, "kube-env: stdin closed")
			cancel()
		}()
	}

	dataDir, err := makeDataDir(c.dataDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-env: %v\n", err)
		return 1
	}
	defer func() {
		if c.keepData {
			fmt.Fprintf(os.Stderr, "kube-env: keeping data directory %s\n", dataDir)
			return
		}
		if err := os.RemoveAll(dataDir); err != nil {
			fmt.Fprintf(os.Stderr, "kube-env: removing %s: %v\n", dataDir, err)
		}
	}()

	if err := serve(ctx, c, dataDir); err != nil {
		fmt.Fprintf(os.Stderr, "kube-env: %v\n", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "kube-env: stopped")
	return 0
}

func makeDataDir(dir string) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", "iter8-kube-env-")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return abs, os.MkdirAll(abs, 0o700)
	case err != nil:
		return "", err
	case len(entries) > 0:
		return "", fmt.Errorf("--data-dir %s is not empty", abs)
	}
	return abs, nil
}

// serve runs etcd and kube-apiserver until ctx is done or either fails.
func serve(ctx context.Context, c *config, dataDir string) error {
	certDir := filepath.Join(dataDir, "pki")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	pki, err := generatePKI(certDir, c.bindAddress)
	if err != nil {
		return fmt.Errorf("generating certificates: %w", err)
	}

	// etcd binds its own ports from URLs, so free ports are picked first.
	etcdClientPort, err := portOrFree(c.bindAddress, c.etcdClientPort)
	if err != nil {
		return err
	}
	etcdPeerPort, err := portOrFree(c.bindAddress, c.etcdPeerPort)
	if err != nil {
		return err
	}
	etcd, err := startEtcd(ctx, filepath.Join(dataDir, "etcd"), c.bindAddress, etcdClientPort, etcdPeerPort)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	defer func() {
		etcd.Close()
		fmt.Fprintln(os.Stderr, "kube-env: etcd stopped")
	}()

	// The apiserver gets an already bound listener: no port race.
	listener, err := net.Listen("tcp", net.JoinHostPort(c.bindAddress, strconv.Itoa(c.port)))
	if err != nil {
		return fmt.Errorf("listening for kube-apiserver: %w", err)
	}
	apiPort := listener.Addr().(*net.TCPAddr).Port
	server := "https://" + net.JoinHostPort(c.bindAddress, strconv.Itoa(apiPort))

	opts, err := apiserverOptions(ctx, c, pki, certDir, listener, etcd.Clients[0].Addr().String())
	if err != nil {
		_ = listener.Close()
		return fmt.Errorf("configuring kube-apiserver: %w", err)
	}

	apiCtx, cancelAPI := context.WithCancel(context.Background())
	defer cancelAPI()
	apiDone := make(chan error, 1)
	go func() { apiDone <- app.Run(apiCtx, opts) }()

	// Stop the apiserver (and wait for it) before etcd goes away.
	stopAPI := func() error {
		cancelAPI()
		select {
		case err := <-apiDone:
			fmt.Fprintln(os.Stderr, "kube-env: kube-apiserver stopped")
			return err
		case <-time.After(c.stopTimeout):
			return fmt.Errorf("kube-apiserver did not stop within %s", c.stopTimeout)
		}
	}

	readyCtx, cancelReady := context.WithTimeout(ctx, c.readyTimeout)
	defer cancelReady()
	readyErr := make(chan error, 1)
	go func() { readyErr <- waitReady(readyCtx, server, pki) }()
	select {
	case err := <-apiDone:
		if err == nil {
			err = errors.New("exited before becoming ready")
		}
		return fmt.Errorf("kube-apiserver: %w", err)
	case err := <-etcd.Err():
		_ = stopAPI()
		return fmt.Errorf("etcd: %w", err)
	case err := <-readyErr:
		if err != nil {
			stopErr := stopAPI()
			if ctx.Err() != nil {
				return stopErr // interrupted while starting
			}
			return errors.Join(fmt.Errorf("waiting for %s/readyz: %w", server, err), stopErr)
		}
	}

	if err := writeKubeconfig(c.kubeconfig, server, pki); err != nil {
		return errors.Join(fmt.Errorf("writing kubeconfig: %w", err), stopAPI())
	}
	defer func() {
		if err := os.Remove(c.kubeconfig); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "kube-env: removing %s: %v\n", c.kubeconfig, err)
		}
	}()
	fmt.Printf("kube-env: ready: kubernetes %s at %s (etcd %s) KUBECONFIG=%s\n",
		kubernetesVersion, server, etcd.Clients[0].Addr(), c.kubeconfig)

	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "kube-env: stop requested, shutting down")
		return stopAPI()
	case err := <-apiDone:
		return fmt.Errorf("kube-apiserver exited: %v", err)
	case err := <-etcd.Err():
		return errors.Join(fmt.Errorf("etcd: %w", err), stopAPI())
	}
}

func portOrFree(host string, port int) (int, error) {
	if port != 0 {
		return port, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	port = l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

func startEtcd(ctx context.Context, dir, host string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "kube-env"
	cfg.Dir = dir
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(clientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(peerPort))}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	// A throw-away test store: durability across power loss does not matter,
	// and fsync dominates write latency on small machines.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(time.Minute):
		e.Close()
		return nil, errors.New("not ready within a minute")
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
}

// apiserverOptions builds kube-apiserver's options exactly as its command
// line would (the flags are its stable interface), then completes and
// validates them the way cmd/kube-apiserver does.
func apiserverOptions(ctx context.Context, c *config, pki *pkiFiles, certDir string, listener net.Listener, etcdAddr string) (options.CompletedOptions, error) {
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{
		"--etcd-servers=http://" + etcdAddr,
		"--bind-address=" + c.bindAddress,
		"--advertise-address=" + c.bindAddress,
		// The "kubernetes" Service's endpoints may not be a loopback address.
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + certDir,
		"--tls-cert-file=" + pki.servingCert,
		"--tls-private-key-file=" + pki.servingKey,
		"--client-ca-file=" + pki.caCert,
		"--authorization-mode=Node,RBAC",
		"--anonymous-auth=false",
		"--service-cluster-ip-range=" + serviceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.saPublicKey,
		"--service-account-signing-key-file=" + pki.saPrivateKey,
		"--allow-privileged=true",
		"--profiling=false",
	}
	args = append(args, c.apiserverArgs...)
	if err := fs.Parse(args); err != nil {
		return options.CompletedOptions{}, err
	}
	s.SecureServing.Listener = listener
	s.SecureServing.BindPort = listener.Addr().(*net.TCPAddr).Port

	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return options.CompletedOptions{}, err
	}
	featureGate := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)
	if featureGate == nil {
		featureGate = feature.DefaultFeatureGate
	}
	if err := logsapi.ValidateAndApply(s.Logs, featureGate); err != nil {
		return options.CompletedOptions{}, err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return options.CompletedOptions{}, err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return options.CompletedOptions{}, utilerrors.NewAggregate(errs)
	}
	klog.InfoS("kube-env: starting kube-apiserver", "version", kubernetesVersion, "port", s.SecureServing.BindPort)
	return completed, nil
}

// waitReady polls /readyz as the admin identity until it answers "ok".
func waitReady(ctx context.Context, server string, pki *pkiFiles) error {
	client, err := adminHTTPClient(pki)
	if err != nil {
		return err
	}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			body, readErr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			if readErr == nil && resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok" {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last answer: %s)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func adminHTTPClient(pki *pkiFiles) (*http.Client, error) {
	pair, err := tls.X509KeyPair(pki.adminCertPEM, pki.adminKeyPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pki.caCertPEM) {
		return nil, errors.New("bad CA certificate")
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
		},
	}, nil
}
