// Package server is the KMS gRPC service: wire-compatible with
// sidero.kms.KMSService, sealing with AES-256-GCM bound to the node UUID,
// with a deny list, optional mTLS node binding, per-client rate limits, an
// audit log, health and Prometheus metrics.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/keyring"
	"github.com/cryptinit/cryptinit/netboot/kms"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxMessage = 16 << 10
	DefaultMaxData    = 4 << 10
)

// Config configures a Server.
type Config struct {
	// KeyringPath is the keyring file; Reload re-reads it (after a rotate).
	KeyringPath string
	// Keyring, if set, is used instead of reading KeyringPath at start.
	Keyring *keyring.Ring
	// TLS is the server TLS config; nil serves plaintext gRPC.
	TLS *tls.Config
	// BindClientCert requires a client certificate whose identity (CN, a DNS
	// SAN, or a urn:uuid: URI SAN) equals the request's node UUID.
	BindClientCert bool
	// DenyListPath names the deny list file ("" for none).
	DenyListPath string
	// MaxMessage bounds a request message; MaxData bounds the data to seal.
	MaxMessage, MaxData int
	// Rate (requests a second) and Burst limit each client (its
	// certificate identity, else its IP address). Rate 0 disables.
	Rate  float64
	Burst int
	// Audit receives one JSON line per request (nil for none).
	Audit io.Writer
	// Log receives operational messages (nil discards them).
	Log *slog.Logger
	// Now is the clock (nil for time.Now).
	Now func() time.Time
}

// Server is a running KMS service.
type Server struct {
	cfg     Config
	now     func() time.Time
	log     *slog.Logger
	ring    atomic.Pointer[keyring.Ring]
	deny    atomic.Pointer[denyList]
	limiter *limiter
	audit   *auditLog
	metrics *metrics
	grpc    *grpc.Server
	health  *health.Server
	stopped atomic.Bool
	reload  sync.Mutex
	// reloadErr is the last Reload's failure, nil after a good one:
	// /healthz reports it until a reload succeeds.
	reloadErr atomic.Pointer[error]
	// handleHook, when set before Serve (tests only), runs in handle
	// after its audit record is armed: a test holds a request there.
	handleHook func()
}

// New builds a Server. It does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.MaxData <= 0 {
		cfg.MaxData = DefaultMaxData
	}
	s := &Server{cfg: cfg, now: cfg.Now, log: cfg.Log}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	ring := cfg.Keyring
	if ring == nil {
		var err error
		if ring, err = keyring.Load(cfg.KeyringPath); err != nil {
			return nil, err
		}
	}
	s.ring.Store(ring)
	if cfg.DenyListPath != "" {
		d, err := loadDenyList(cfg.DenyListPath)
		if err != nil {
			return nil, err
		}
		s.deny.Store(d)
	}
	if cfg.BindClientCert && (cfg.TLS == nil || cfg.TLS.ClientCAs == nil) {
		return nil, errors.New("binding nodes to client certificates needs TLS with a client CA")
	}
	s.limiter = newLimiter(cfg.Rate, cfg.Burst, s.now)
	s.audit = newAuditLog(cfg.Audit)
	s.metrics = newMetrics(s)

	opts := []grpc.ServerOption{
		grpc.ForceServerCodec(codec{}),
		grpc.MaxRecvMsgSize(cfg.MaxMessage),
		grpc.MaxSendMsgSize(cfg.MaxData + keyring.Overhead + 64),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.StatsHandler(auditStats{s}),
		// Stop, too, returns only once every handler (and the stats End
		// callback after it) has returned, so its audit record is queued
		// before Shutdown closes the audit log. (GracefulStop, which
		// Shutdown also waits for, does so by itself in this grpc-go.)
		grpc.WaitForHandlers(true),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	s.grpc = grpc.NewServer(opts...)
	s.grpc.RegisterService(&serviceDesc, s)
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(kms.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	return s, nil
}

// Serve serves gRPC on lis until Shutdown.
func (s *Server) Serve(lis net.Listener) error {
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown reports NOT_SERVING, lets running requests finish until ctx ends,
// then closes every connection, waits for the handlers still running (their
// requests' contexts are cancelled) and writes out every queued audit record
// (however long a stalled audit writer takes: no record is dropped).
func (s *Server) Shutdown(ctx context.Context) {
	s.stopped.Store(true)
	s.health.Shutdown()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	s.audit.close()
}

// HTTPHandler serves /healthz and /metrics for the separate HTTP listener.
func (s *Server) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if s.stopped.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		if err := s.Healthy(); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok keys=%d newest=%d denied=%d\n", s.ring.Load().Len(), s.ring.Load().Newest(), s.deny.Load().len())
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	return mux
}

// Healthy reports why the server cannot keep working, nil when it can: the
// last Reload failed (the server runs on what it loaded before), or the
// keyring file, read now as the next reload would read it, does not load
// (unreadable, wrong mode, corrupt) or lacks a key the server seals or
// opens with, or holds another secret under its id. A keyring that only gained keys (rotate, no SIGHUP yet) is
// healthy.
func (s *Server) Healthy() error {
	if p := s.reloadErr.Load(); p != nil && *p != nil {
		return fmt.Errorf("last reload failed: %w", *p)
	}
	if s.cfg.KeyringPath == "" {
		return nil
	}
	onDisk, err := keyring.Load(s.cfg.KeyringPath)
	if err != nil {
		return err
	}
	if err := onDisk.Keeps(s.ring.Load()); err != nil {
		return fmt.Errorf("keyring %s no longer holds the keys this server uses (%w): blobs sealed with them would not open after a reload", s.cfg.KeyringPath, err)
	}
	return nil
}

// Reload re-reads the keyring and the deny list. On error the old ones stay
// in force: a broken deny list must not re-admit revoked nodes.
func (s *Server) Reload() (err error) {
	s.reload.Lock()
	defer s.reload.Unlock()
	defer func() { s.reloadErr.Store(&err) }()
	var errs []error
	if s.cfg.KeyringPath != "" {
		if r, err := keyring.Load(s.cfg.KeyringPath); err != nil {
			errs = append(errs, err)
		} else {
			s.ring.Store(r)
		}
	}
	if s.cfg.DenyListPath != "" {
		if d, err := loadDenyList(s.cfg.DenyListPath); err != nil {
			errs = append(errs, err)
		} else {
			s.deny.Store(d)
		}
	}
	return errors.Join(errs...)
}

// WatchDenyList reloads the deny list whenever its file changes, checking
// every interval until ctx ends. A change is loaded once the file looked the
// same at two checks in a row, so an editor's truncate-then-write is not read
// half-way (an empty list would re-admit revoked nodes); replacing the file
// by rename is best.
func (s *Server) WatchDenyList(ctx context.Context, interval time.Duration) {
	if s.cfg.DenyListPath == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var last fileStamp
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := stamp(s.cfg.DenyListPath)
		stable := now == last
		last = now
		if !stable || !s.deny.Load().changed(s.cfg.DenyListPath) {
			continue
		}
		d, err := loadDenyList(s.cfg.DenyListPath)
		if err != nil {
			s.log.Error("deny list reload failed; keeping the previous list", "err", err)
			continue
		}
		s.deny.Store(d)
		s.log.Info("deny list reloaded", "nodes", d.len())
	}
}

// kmsService is what serviceDesc dispatches to.
type kmsService interface {
	handle(ctx context.Context, op string, dec func(any) error) (*kms.Response, error)
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: kms.ServiceName,
	HandlerType: (*kmsService)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Seal", Handler: methodHandler("seal", kms.MethodSeal)},
		{MethodName: "Unseal", Handler: methodHandler("unseal", kms.MethodUnseal)},
	},
	Metadata: "sidero/kms/kms.proto",
}

func methodHandler(op, fullMethod string) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(srv any, ctx context.Context, dec func(any) error, intercept grpc.UnaryServerInterceptor) (any, error) {
		svc := srv.(kmsService)
		if intercept == nil {
			return svc.handle(ctx, op, dec)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod}
		return intercept(ctx, nil, info, func(ctx context.Context, _ any) (any, error) {
			return svc.handle(ctx, op, dec)
		})
	}
}

// handle serves one Seal or Unseal: rate limit, decode, checks, crypto,
// then metrics and one audit line whatever the outcome.
func (s *Server) handle(ctx context.Context, op string, dec func(any) error) (resp *kms.Response, err error) {
	markHandled(ctx)
	start := s.now()
	ev := event{Time: start.UTC(), Op: op}
	p, _ := peer.FromContext(ctx)
	client, cert := clientIdentity(p)
	ev.Client = client
	limitKey := "cert:" + client
	if p != nil && p.Addr != nil {
		ev.Peer = p.Addr.String()
		if cert == nil {
			limitKey = hostOf(p.Addr)
		}
	}
	defer func() {
		st := status.Convert(err)
		ev.Result = st.Code().String()
		if err != nil {
			ev.Message = st.Message()
		}
		d := s.now().Sub(start)
		ev.Millis = float64(d.Microseconds()) / 1000
		s.metrics.requests.WithLabelValues(op, ev.Result).Inc()
		s.metrics.duration.WithLabelValues(op).Observe(d.Seconds())
		s.audit.log(&ev)
	}()
	if s.handleHook != nil {
		s.handleHook()
	}

	if !s.limiter.allow(limitKey) {
		return nil, status.Errorf(codes.ResourceExhausted, "rate limit for client %s exceeded (%.0f requests/s, burst %d); retry later", limitKey, s.cfg.Rate, s.cfg.Burst)
	}
	var raw rawMessage
	if err := dec(&raw); err != nil {
		return nil, err
	}
	var req kms.Request
	if err := req.Unmarshal(raw.b); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "request is not a sidero.kms.Request: %v", err)
	}
	clear(raw.b)
	defer clear(req.Data)
	if err := checkNodeUUID(req.NodeUUID); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	ev.NodeUUID = req.NodeUUID
	if s.deny.Load().denied(req.NodeUUID) {
		return nil, status.Errorf(codes.PermissionDenied, "node %s is on the deny list (revoked)", req.NodeUUID)
	}
	if s.cfg.BindClientCert {
		if cert == nil {
			return nil, status.Errorf(codes.Unauthenticated, "a client certificate for node %s is required", req.NodeUUID)
		}
		if !certMatches(cert, req.NodeUUID) {
			return nil, status.Errorf(codes.PermissionDenied, "client certificate %q is not node %s", client, req.NodeUUID)
		}
	}
	ring := s.ring.Load()
	switch op {
	case "seal":
		if len(req.Data) == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "nothing to seal for node %s: data is empty", req.NodeUUID)
		}
		if len(req.Data) > s.cfg.MaxData {
			return nil, status.Errorf(codes.ResourceExhausted, "data to seal is %d bytes, at most %d allowed", len(req.Data), s.cfg.MaxData)
		}
		ev.KeyID = ring.Newest()
		return &kms.Response{Data: ring.Seal(req.NodeUUID, req.Data)}, nil
	default:
		pt, id, err := ring.Open(req.NodeUUID, req.Data)
		ev.KeyID = id
		switch {
		case err == nil:
			return &kms.Response{Data: pt}, nil
		case errors.Is(err, keyring.ErrNotBlob):
			return nil, status.Errorf(codes.InvalidArgument, "%v", err)
		case errors.Is(err, keyring.ErrUnknownKey):
			return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
		case errors.Is(err, keyring.ErrAuthentication):
			return nil, status.Errorf(codes.PermissionDenied, "%v", err)
		}
		return nil, status.Errorf(codes.Internal, "unseal for node %s: %v", req.NodeUUID, err)
	}
}

// clientIdentity returns the verified client certificate's identity (its
// CN, else its first SAN) and the certificate, or "" and nil.
func clientIdentity(p *peer.Peer) (string, *x509.Certificate) {
	if p == nil {
		return "", nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return "", nil
	}
	c := ti.State.VerifiedChains[0][0]
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName, c
	case len(c.URIs) > 0:
		return c.URIs[0].String(), c
	case len(c.DNSNames) > 0:
		return c.DNSNames[0], c
	}
	return c.SerialNumber.String(), c
}

// certMatches reports whether cert names nodeUUID in its CN, a DNS SAN or a
// urn:uuid: URI SAN.
func certMatches(c *x509.Certificate, nodeUUID string) bool {
	if strings.EqualFold(c.Subject.CommonName, nodeUUID) {
		return true
	}
	for _, d := range c.DNSNames {
		if strings.EqualFold(d, nodeUUID) {
			return true
		}
	}
	for _, u := range c.URIs {
		if strings.EqualFold(u.Scheme, "urn") && strings.EqualFold(u.Opaque, "uuid:"+nodeUUID) {
			return true
		}
	}
	return false
}

func hostOf(a net.Addr) string {
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}
