// Command kms-server is a network KMS wire-compatible with Talos's
// sidero.kms.KMSService: nodes seal a disk key with it at install and
// unseal it at boot. Each blob is bound to its node UUID and names the
// master key that sealed it, so keys rotate and nodes can be revoked.
//
//	kms-server [flags]                         serve
//	kms-server rotate --keyring FILE           add a new master key (then SIGHUP the server)
//	kms-server --generate-tls DIR --san NAME   write a lab CA, server and client certificates
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/keyring"
	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/server"
	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/tlsgen"
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

func run(ctx context.Context, args []string, log *slog.Logger) error {
	if len(args) > 0 && args[0] == "rotate" {
		return rotate(args[1:], log)
	}
	fs := flag.NewFlagSet("kms-server", flag.ContinueOnError)
	var (
		listen      = fs.String("listen", ":4050", "gRPC listen address")
		httpListen  = fs.String("http-listen", "127.0.0.1:4051", "HTTP listen address for /healthz and /metrics (empty: off)")
		keyringPath = fs.String("keyring", "/var/lib/kms-server/keyring.json", "master keyring file; created (mode 0600) on first run")
		certFile    = fs.String("tls-cert", "", "server certificate (PEM)")
		keyFile     = fs.String("tls-key", "", "server certificate key (PEM)")
		plaintext   = fs.Bool("insecure-plaintext", false, "serve gRPC without TLS (labs; Talos grpc:// endpoints)")
		clientCA    = fs.String("client-ca", "", "CA bundle that verifies client certificates (enables mTLS)")
		requireCert = fs.Bool("require-client-cert", false, "refuse clients without a valid client certificate")
		bindNode    = fs.Bool("bind-node-to-cert", false, "require the client certificate's CN, DNS SAN or urn:uuid: SAN to equal the node UUID")
		denyList    = fs.String("deny-list", "", "file of revoked node UUIDs, one a line; reloaded when it changes and on SIGHUP")
		denyEvery   = fs.Duration("deny-list-interval", 5*time.Second, "how often to check the deny list file for changes")
		maxMessage  = fs.Int("max-message", server.DefaultMaxMessage, "largest request message in bytes")
		maxData     = fs.Int("max-data", server.DefaultMaxData, "largest secret to seal in bytes")
		rate        = fs.Float64("rate", 5, "requests per second allowed per client (certificate identity or IP); 0: no limit")
		burst       = fs.Int("burst", 20, "requests a client may make at once before the rate applies")
		auditPath   = fs.String("audit-log", "-", "JSON-lines audit log file ('-': stdout, empty: off)")
		grace       = fs.Duration("shutdown-grace", 10*time.Second, "how long running requests may finish on SIGTERM")
		genTLS      = fs.String("generate-tls", "", "write a lab CA, server and client certificates into `DIR` and exit")
		sans        = fs.String("san", "localhost,127.0.0.1,10.0.2.2", "with --generate-tls: comma-separated server names and IPs")
		clients     = fs.String("client-certs", "", "with --generate-tls: comma-separated client identities (node UUIDs)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (subcommands: rotate)", fs.Arg(0))
	}
	if *genTLS != "" {
		if err := tlsgen.Generate(*genTLS, tlsgen.Options{SANs: splitList(*sans), Clients: splitList(*clients)}); err != nil {
			return err
		}
		log.Info("wrote lab PKI", "dir", *genTLS, "sans", *sans, "clients", *clients)
		return nil
	}

	var (
		tlsConfig *tls.Config
		certs     *server.CertReloader
		err       error
	)
	switch {
	case *bindNode && *clientCA == "":
		return errors.New("--bind-node-to-cert needs --client-ca: the node is bound to a verified client certificate")
	case *plaintext && (*certFile != "" || *clientCA != ""):
		return errors.New("--insecure-plaintext contradicts --tls-cert/--client-ca")
	case *plaintext:
		log.Warn("serving gRPC WITHOUT TLS: anyone on the network sees sealed blobs and unsealed keys")
	case *certFile == "" || *keyFile == "":
		return errors.New("TLS needs --tls-cert and --tls-key (or --generate-tls DIR to make lab ones; --insecure-plaintext to go without)")
	default:
		if certs, err = server.NewCertReloader(*certFile, *keyFile); err != nil {
			return err
		}
		if tlsConfig, err = server.TLSConfig(certs, *clientCA, *requireCert); err != nil {
			return err
		}
	}
	ring, created, err := keyring.LoadOrCreate(*keyringPath)
	if err != nil {
		return err
	}
	if created {
		log.Info("created keyring", "path", *keyringPath)
	}
	cfg := server.Config{
		KeyringPath:    *keyringPath,
		Keyring:        ring,
		BindClientCert: *bindNode,
		DenyListPath:   *denyList,
		MaxMessage:     *maxMessage,
		MaxData:        *maxData,
		Rate:           *rate,
		Burst:          *burst,
		Log:            log,
		TLS:            tlsConfig,
	}
	switch *auditPath {
	case "":
	case "-":
		cfg.Audit = os.Stdout
	default:
		f, err := os.OpenFile(*auditPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("audit log: %w", err)
		}
		defer f.Close()
		cfg.Audit = f
	}
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	var hsrv *http.Server
	if *httpListen != "" {
		hlis, err := net.Listen("tcp", *httpListen)
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
	go srv.WatchDenyList(wctx, *denyEvery)
	go reloadOnHUP(wctx, srv, certs, log)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	log.Info("serving sidero.kms.KMSService", "addr", lis.Addr().String(), "tls", cfg.TLS != nil,
		"mtls", *clientCA != "", "keys", ring.Len(), "newest_key", ring.Newest())
	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down", "grace", *grace)
		sctx, scancel := context.WithTimeout(context.Background(), *grace)
		defer scancel()
		srv.Shutdown(sctx)
		err = <-errc
	}
	if hsrv != nil {
		hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
		defer hcancel()
		hsrv.Shutdown(hctx)
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
	path := fs.String("keyring", "/var/lib/kms-server/keyring.json", "master keyring file")
	if err := fs.Parse(args); err != nil {
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
