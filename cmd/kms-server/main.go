// Command kms-server is a network KMS wire-compatible with Talos's
// sidero.kms.KMSService: nodes seal a disk key with it at install and
// unseal it at boot. Each blob is bound to its node UUID and names the
// master key that sealed it, so keys rotate and nodes can be revoked.
//
//	kms-server [flags]                         serve
//	kms-server rotate --keyring FILE           add a new master key (then SIGHUP the server)
//	kms-server --generate-tls DIR --san NAME   write a lab CA, server and client certificates
//	kms-server version                         print version, commit and Go version
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/keyring"
	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/server"
	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/tlsgen"
	"github.com/cryptinit/cryptinit/internal/version"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], log); err != nil {
		fmt.Fprintln(os.Stderr, "kms-server:", err)
		os.Exit(1)
	}
}

// defaultKeyring is where the server and rotate find the master keyring.
const defaultKeyring = "/var/lib/kms-server/keyring.json"

// options are the server's command-line flags.
type options struct {
	listen, httpListen          string
	keyringPath                 string
	certFile, keyFile, clientCA string
	plaintext, requireCert      bool
	bindNode, unboundCerts      bool
	bindNodeSet                 bool // --bind-node-to-cert given on the command line
	denyList                    string
	denyEvery, grace            time.Duration
	maxMessage, maxData, burst  int
	rate                        float64
	auditPath                   string
	genTLS, sans, clients       string
}

// usageHead is the top of -h: the commands, before the flags.
const usageHead = `Usage:
  kms-server [flags]                          serve sidero.kms.KMSService
  kms-server rotate [--keyring FILE]          add a new master key (then SIGHUP the server)
  kms-server --generate-tls DIR [--san NAMES] [--client-certs UUIDS]
                                              write a lab CA, server and client certificates
  kms-server version                          print version, commit and Go version

Flags:
`

func parseOptions(args []string) (*options, error) {
	return parseOptionsTo(args, os.Stderr)
}

// parseOptionsTo parses the serve flags; -h prints the usage to out.
func parseOptionsTo(args []string, out io.Writer) (*options, error) {
	var o options
	fs := flag.NewFlagSet("kms-server", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usageHead)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.listen, "listen", ":4050", "gRPC listen address")
	fs.StringVar(&o.httpListen, "http-listen", "127.0.0.1:4051", "HTTP listen address for /healthz and /metrics (empty: off)")
	fs.StringVar(&o.keyringPath, "keyring", defaultKeyring, "master keyring file; created (mode 0600) on first run")
	fs.StringVar(&o.certFile, "tls-cert", "", "server certificate (PEM)")
	fs.StringVar(&o.keyFile, "tls-key", "", "server certificate key (PEM)")
	fs.BoolVar(&o.plaintext, "insecure-plaintext", false, "serve gRPC without TLS (labs; Talos grpc:// endpoints)")
	fs.StringVar(&o.clientCA, "client-ca", "", "CA bundle that verifies client certificates (enables mTLS)")
	fs.BoolVar(&o.requireCert, "require-client-cert", false, "refuse clients without a valid client certificate; implies --bind-node-to-cert unless --unbound-client-certs")
	fs.BoolVar(&o.bindNode, "bind-node-to-cert", false, "require the client certificate's CN, DNS SAN or urn:uuid: SAN to equal the node UUID (default: on with --require-client-cert)")
	fs.BoolVar(&o.unboundCerts, "unbound-client-certs", false, "with --require-client-cert: let any valid client certificate seal and unseal for any node UUID (turns off the default node binding)")
	fs.StringVar(&o.denyList, "deny-list", "", "file of revoked node UUIDs, one a line; reloaded when it changes and on SIGHUP")
	fs.DurationVar(&o.denyEvery, "deny-list-interval", 5*time.Second, "how often to check the deny list file for changes")
	fs.IntVar(&o.maxMessage, "max-message", server.DefaultMaxMessage, "largest request message in bytes")
	fs.IntVar(&o.maxData, "max-data", server.DefaultMaxData, "largest secret to seal in bytes")
	fs.Float64Var(&o.rate, "rate", 5, "requests per second allowed per client (certificate identity or IP); 0: no limit")
	fs.IntVar(&o.burst, "burst", 20, "requests a client may make at once before the rate applies")
	fs.StringVar(&o.auditPath, "audit-log", "-", "JSON-lines audit log file ('-': stdout, empty: off)")
	fs.DurationVar(&o.grace, "shutdown-grace", 10*time.Second, "how long running requests may finish on SIGTERM")
	fs.StringVar(&o.genTLS, "generate-tls", "", "write a lab CA, server and client certificates into `DIR` and exit")
	fs.StringVar(&o.sans, "san", "localhost,127.0.0.1,10.0.2.2", "with --generate-tls: comma-separated server names and IPs")
	fs.StringVar(&o.clients, "client-certs", "", "with --generate-tls: comma-separated client identities (node UUIDs)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (subcommands: rotate, version)", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "bind-node-to-cert" {
			o.bindNodeSet = true
		}
	})
	return &o, nil
}

// bindNodeToCert tells whether a client certificate must name the node UUID
// it asks for: when --bind-node-to-cert says so, else whenever client
// certificates are required, unless --unbound-client-certs opts out.
func (o *options) bindNodeToCert() bool {
	if o.bindNodeSet {
		return o.bindNode
	}
	return o.requireCert && !o.unboundCerts
}

func run(ctx context.Context, args []string, log *slog.Logger) error {
	return runTo(ctx, args, os.Stdout, log)
}

// runTo runs one command line; what an operator asked to see (help,
// version, next steps) goes to out, the log to log.
func runTo(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	if len(args) > 0 {
		switch args[0] {
		case "rotate":
			return rotate(args[1:], log)
		case "version":
			_, err := fmt.Fprintf(out, "kms-server %s\n", version.Get())
			return err
		}
	}
	o, err := parseOptionsTo(args, out)
	if errors.Is(err, flag.ErrHelp) {
		return nil // asked for, printed: not an error
	}
	if err != nil {
		return err
	}
	if o.genTLS != "" {
		if err := tlsgen.Generate(o.genTLS, tlsgen.Options{SANs: splitList(o.sans), Clients: splitList(o.clients)}); err != nil {
			return err
		}
		log.Info("wrote lab PKI", "dir", o.genTLS, "sans", o.sans, "clients", o.clients)
		return printNextSteps(out, o.genTLS, splitList(o.sans), splitList(o.clients))
	}
	return serve(ctx, o, log)
}

// Where the node's boot reads the KMS TLS files (boot.KMSCAFile and
// friends; a test keeps them equal).
const (
	nodeCAFile   = "/etc/cryptinit/kms-ca.pem"
	nodeCertFile = "/etc/cryptinit/kms-client.pem"
	nodeKeyFile  = "/etc/cryptinit/kms-client-key.pem"
)

// printNextSteps tells the operator, after --generate-tls, the exact
// command that serves with the files written and what to copy where on the
// nodes.
func printNextSteps(out io.Writer, dir string, sans, clients []string) error {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	serve := fmt.Sprintf("kms-server --tls-cert %s --tls-key %s --client-ca %s --require-client-cert", p(tlsgen.ServerCert), p(tlsgen.ServerKey), p(tlsgen.CACert))
	if len(clients) == 0 {
		serve = fmt.Sprintf("kms-server --tls-cert %s --tls-key %s", p(tlsgen.ServerCert), p(tlsgen.ServerKey))
	}
	host := "HOST"
	if len(sans) > 0 {
		host = sans[0]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "wrote a lab CA, a server certificate and %d client certificate(s) in %s (keys mode 0600; keep %s off the nodes)\n", len(clients), dir, tlsgen.CAKey)
	fmt.Fprintf(&b, "next, on the KMS host:\n  %s\n", serve)
	fmt.Fprintf(&b, "then into each node's signed image (never onto STATE):\n  cp %s <image root>%s\n", p(tlsgen.CACert), nodeCAFile)
	for _, c := range clients {
		cert, key := tlsgen.ClientFiles(c)
		fmt.Fprintf(&b, "  for node %s:\n    cp %s <image root>%s\n    cp %s <image root>%s\n", c, p(cert), nodeCertFile, p(key), nodeKeyFile)
		fmt.Fprintf(&b, "    (or: cryptctl image build ... --kms-ca %s --kms-cert %s --kms-key %s)\n", p(tlsgen.CACert), p(cert), p(key))
	}
	if len(clients) == 0 {
		fmt.Fprintf(&b, "  (no client certificates: add --client-certs NODE-UUID,... to issue them and serve with --client-ca --require-client-cert)\n")
	}
	fmt.Fprintf(&b, "and give the volume a kms key: endpoint: https://%s:4050\n", host)
	_, err := io.WriteString(out, b.String())
	return err
}

// tls checks the TLS flags for contradictions and loads the server
// certificate; both results are nil for --insecure-plaintext.
func (o *options) tls(log *slog.Logger) (*tls.Config, *server.CertReloader, error) {
	switch {
	case o.plaintext && o.requireCert:
		return nil, nil, errors.New("--insecure-plaintext contradicts --require-client-cert: client certificates need TLS; drop --insecure-plaintext and give --tls-cert, --tls-key and --client-ca")
	case o.unboundCerts && !o.requireCert:
		return nil, nil, errors.New("--unbound-client-certs applies only with --require-client-cert (node binding is on by default only there)")
	case o.unboundCerts && o.bindNodeSet && o.bindNode:
		return nil, nil, errors.New("--unbound-client-certs contradicts --bind-node-to-cert: choose one")
	case o.requireCert && o.clientCA == "":
		return nil, nil, errors.New("--require-client-cert needs --client-ca, the CA bundle that verifies client certificates")
	case o.bindNodeToCert() && o.clientCA == "":
		return nil, nil, errors.New("--bind-node-to-cert needs --client-ca: the node is bound to a verified client certificate")
	case o.plaintext && (o.certFile != "" || o.clientCA != ""):
		return nil, nil, errors.New("--insecure-plaintext contradicts --tls-cert/--client-ca")
	case o.plaintext:
		log.Warn("serving gRPC WITHOUT TLS: anyone on the network sees sealed blobs and unsealed keys")
		return nil, nil, nil
	case o.certFile == "" || o.keyFile == "":
		return nil, nil, errors.New("TLS needs --tls-cert and --tls-key (or --generate-tls DIR to make lab ones; --insecure-plaintext to go without)")
	}
	certs, err := server.NewCertReloader(o.certFile, o.keyFile)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := server.TLSConfig(certs, o.clientCA, o.requireCert)
	if err != nil {
		return nil, nil, err
	}
	return cfg, certs, nil
}

// audit opens the audit log: nil when off, stdout for "-". The caller
// closes the file when there is one.
func (o *options) audit() (io.Writer, *os.File, error) {
	switch o.auditPath {
	case "":
		return nil, nil, nil
	case "-":
		return os.Stdout, nil, nil
	}
	f, err := os.OpenFile(o.auditPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	return f, f, nil
}

// serve runs the gRPC server (and the HTTP health/metrics server) until ctx
// ends, then shuts down gracefully.
func serve(ctx context.Context, o *options, log *slog.Logger) error {
	tlsConfig, certs, err := o.tls(log)
	if err != nil {
		return err
	}
	ring, created, err := keyring.LoadOrCreate(o.keyringPath)
	if err != nil {
		return err
	}
	if created {
		log.Info("created keyring", "path", o.keyringPath)
	}
	cfg := server.Config{
		KeyringPath:    o.keyringPath,
		Keyring:        ring,
		BindClientCert: o.bindNodeToCert(),
		DenyListPath:   o.denyList,
		MaxMessage:     o.maxMessage,
		MaxData:        o.maxData,
		Rate:           o.rate,
		Burst:          o.burst,
		Log:            log,
		TLS:            tlsConfig,
	}
	audit, auditFile, err := o.audit()
	if err != nil {
		return err
	}
	if auditFile != nil {
		defer auditFile.Close()
	}
	cfg.Audit = audit
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	var hsrv *http.Server
	if o.httpListen != "" {
		hlis, err := net.Listen("tcp", o.httpListen)
		if err != nil {
			lis.Close()
			return err
		}
		hsrv = &http.Server{Handler: srv.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second}
		go hsrv.Serve(hlis)
		log.Info("serving health and metrics", "addr", hlis.Addr().String())
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go srv.WatchDenyList(wctx, o.denyEvery)
	go reloadOnHUP(wctx, srv, certs, log)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	log.Info("serving sidero.kms.KMSService", "addr", lis.Addr().String(), "tls", cfg.TLS != nil,
		"mtls", o.clientCA != "", "client_cert_required", o.requireCert, "node_bound_to_cert", cfg.BindClientCert,
		"keys", ring.Len(), "newest_key", ring.Newest())
	if o.requireCert && !cfg.BindClientCert {
		log.Warn("client certificates are required but not bound to node UUIDs (--unbound-client-certs): any node's certificate opens every node's blobs")
	}
	err = awaitEnd(ctx, srv, errc, o.grace, log)
	if hsrv != nil {
		hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
		defer hcancel()
		hsrv.Shutdown(hctx)
	}
	return err
}

// awaitEnd waits until Serve ends (its error arrives on errc) or ctx is
// cancelled, then shuts srv down either way, giving running requests grace
// to finish: also after Serve failed, so the audit records queued so far
// are written out.
func awaitEnd(ctx context.Context, srv *server.Server, errc <-chan error, grace time.Duration, log *slog.Logger) error {
	var err error
	served := false
	select {
	case err = <-errc:
		served = true
		log.Info("serving failed; shutting down", "grace", grace)
	case <-ctx.Done():
		log.Info("shutting down", "grace", grace)
	}
	sctx, scancel := context.WithTimeout(context.Background(), grace)
	defer scancel()
	srv.Shutdown(sctx)
	if !served {
		err = <-errc
	}
	return err
}

// reloadOnHUP re-reads the keyring, deny list and server certificate on
// SIGHUP.
func reloadOnHUP(ctx context.Context, srv *server.Server, certs *server.CertReloader, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		err := srv.Reload()
		if certs != nil {
			err = errors.Join(err, certs.Reload())
		}
		if err != nil {
			log.Error("reload failed; keeping what was loaded", "err", err)
		} else {
			log.Info("reloaded keyring, deny list and certificate")
		}
	}
}

func rotate(args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("kms-server rotate", flag.ContinueOnError)
	path := fs.String("keyring", defaultKeyring, "master keyring file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	ring, err := keyring.Load(*path)
	if err != nil {
		return err
	}
	next, err := ring.Rotate()
	if err != nil {
		return err
	}
	if err := next.Save(*path); err != nil {
		return err
	}
	log.Info("added master key; new seals use it after the server reloads (SIGHUP)", "keyring", *path, "newest_key", next.Newest(), "keys", next.Len())
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
