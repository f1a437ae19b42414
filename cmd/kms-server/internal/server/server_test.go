package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/keyring"
	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/tlsgen"
	"github.com/cryptinit/cryptinit/netboot/kms"
)

const (
	nodeA = "8c1d2a10-5f3e-4d2b-9a7c-1e2f3a4b5c6d"
	nodeB = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"
)

var secret = []byte("K3y-material-that-must-never-leak-0123456789")

// pki is a lab PKI in a temp dir with client certs for nodeA and nodeB.
type pki struct{ dir string }

func newPKI(t testing.TB) pki {
	t.Helper()
	dir := t.TempDir()
	if err := tlsgen.Generate(dir, tlsgen.Options{SANs: []string{"localhost", "127.0.0.1"}, Clients: []string{nodeA, nodeB}}); err != nil {
		t.Fatal(err)
	}
	return pki{dir}
}

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }

func (p pki) client(t testing.TB, identity string, opts kms.Options) *kms.Client {
	t.Helper()
	cas, err := kms.LoadCAs(p.path(tlsgen.CACert))
	if err != nil {
		t.Fatal(err)
	}
	opts.RootCAs = cas
	if identity != "" {
		c, k := tlsgen.ClientFiles(identity)
		cert, err := kms.LoadClientCert(p.path(c), p.path(k))
		if err != nil {
			t.Fatal(err)
		}
		opts.Certificates = []tls.Certificate{cert}
	}
	if opts.Attempts == 0 {
		opts.Attempts = 1
	}
	cl := kms.New(opts)
	t.Cleanup(cl.Close)
	return cl
}

// serve starts a Server on a loopback port; tlsMode is "", "tls", "mtls"
// (client certs verified if given) or "mtls-required".
func serve(t testing.TB, cfg Config, p pki, tlsMode string) (*Server, string) {
	t.Helper()
	if cfg.Keyring == nil && cfg.KeyringPath == "" {
		r, err := keyring.Generate()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Keyring = r
	}
	scheme := "grpc://"
	if tlsMode != "" {
		certs, err := NewCertReloader(p.path(tlsgen.ServerCert), p.path(tlsgen.ServerKey))
		if err != nil {
			t.Fatal(err)
		}
		ca := ""
		if strings.HasPrefix(tlsMode, "mtls") {
			ca = p.path(tlsgen.CACert)
		}
		if cfg.TLS, err = TLSConfig(certs, ca, tlsMode == "mtls-required"); err != nil {
			t.Fatal(err)
		}
		scheme = "https://"
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	host := "localhost"
	if tlsMode == "" {
		host = "127.0.0.1"
	}
	return s, scheme + host + ":" + lis.Addr().(*net.TCPAddr).AddrPort().String()[len("127.0.0.1:"):]
}

func wantCode(t *testing.T, err error, want kms.Code) {
	t.Helper()
	var st *kms.StatusError
	if !errors.As(err, &st) || st.Code != want {
		t.Fatalf("err = %v, want gRPC code %v", err, want)
	}
}

func TestSealUnsealTLS(t *testing.T) {
	p := newPKI(t)
	_, ep := serve(t, Config{}, p, "tls")
	cl := p.client(t, "", kms.Options{})
	ctx := context.Background()
	blob, err := cl.Seal(ctx, ep, nodeA, secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, secret) {
		t.Fatal("sealed blob contains the secret")
	}
	got, err := cl.Unseal(ctx, ep, nodeA, blob)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	// Node binding: A's blob does not open for B, with a clear refusal
	// that keeps the node UUID (nodeID key material) out of the error.
	_, err = cl.Unseal(ctx, ep, nodeB, blob)
	wantCode(t, err, kms.PermissionDenied)
	if !errors.Is(err, kms.ErrRefused) || strings.Contains(err.Error(), nodeB) || !strings.Contains(err.Error(), "does not open for this node") {
		t.Fatalf("wrong-node error %q should be ErrRefused and not name the node", err)
	}
}

func TestTLSClientRejectsUnknownCA(t *testing.T) {
	p, other := newPKI(t), newPKI(t)
	_, ep := serve(t, Config{}, p, "tls")
	cl := other.client(t, "", kms.Options{Attempts: 1})
	_, err := cl.Seal(context.Background(), ep, nodeA, secret)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Seal against a server of another CA: %v, want a certificate error", err)
	}
}

func TestMTLSBindsNodeToCertificate(t *testing.T) {
	p := newPKI(t)
	_, ep := serve(t, Config{BindClientCert: true}, p, "mtls")
	ctx := context.Background()
	asA := p.client(t, nodeA, kms.Options{})
	blob, err := asA.Seal(ctx, ep, nodeA, secret)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := asA.Unseal(ctx, ep, nodeA, blob); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("A unseals its own blob: %q, %v", got, err)
	}
	// B's certificate cannot ask for A's key, nor seal as A.
	asB := p.client(t, nodeB, kms.Options{})
	_, err = asB.Unseal(ctx, ep, nodeA, blob)
	wantCode(t, err, kms.PermissionDenied)
	_, err = asB.Seal(ctx, ep, nodeA, secret)
	wantCode(t, err, kms.PermissionDenied)
	// No certificate at all.
	_, err = p.client(t, "", kms.Options{}).Unseal(ctx, ep, nodeA, blob)
	wantCode(t, err, kms.Unauthenticated)
}

func TestMTLSRequiredRefusesHandshake(t *testing.T) {
	p := newPKI(t)
	_, ep := serve(t, Config{}, p, "mtls-required")
	ctx := context.Background()
	if _, err := p.client(t, nodeA, kms.Options{}).Seal(ctx, ep, nodeA, secret); err != nil {
		t.Fatalf("with a client cert: %v", err)
	}
	_, err := p.client(t, "", kms.Options{}).Seal(ctx, ep, nodeA, secret)
	if !errors.Is(err, kms.ErrClientCertificate) {
		t.Fatalf("without a client cert: %v, want a refused handshake (ErrClientCertificate)", err)
	}
}

func TestRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	r1, _, err := keyring.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	s, ep := serve(t, Config{KeyringPath: path}, pki{}, "")
	cl := kms.New(kms.Options{Attempts: 1})
	ctx := context.Background()
	old, err := cl.Seal(ctx, ep, nodeA, secret)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := r1.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Save(path); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	fresh, err := cl.Seal(ctx, ep, nodeA, secret)
	if err != nil {
		t.Fatal(err)
	}
	// Header: magic(4) version(1) key id(4, big-endian).
	if old[8] != 1 || fresh[8] != 2 {
		t.Fatalf("key ids in blobs: old %d, new %d; want 1 and 2", old[8], fresh[8])
	}
	for _, b := range [][]byte{old, fresh} {
		if got, err := cl.Unseal(ctx, ep, nodeA, b); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("Unseal after rotation: %q, %v", got, err)
		}
	}
	// A blob naming a key the ring lacks fails clearly, not with random bytes.
	missing := bytes.Clone(fresh)
	missing[8] = 9
	_, err = cl.Unseal(ctx, ep, nodeA, missing)
	wantCode(t, err, kms.FailedPrecondition)
}

func TestDenyList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deny")
	if err := os.WriteFile(path, []byte("# revoked\n"+nodeB+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, ep := serve(t, Config{DenyListPath: path}, pki{}, "")
	cl := kms.New(kms.Options{Attempts: 1})
	ctx := context.Background()
	blobA, err := cl.Seal(ctx, ep, nodeA, secret)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Seal(ctx, ep, strings.ToUpper(nodeB), secret)
	wantCode(t, err, kms.PermissionDenied)

	// Revoke A while the server runs; the watcher picks it up.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.WatchDenyList(wctx, 10*time.Millisecond)
	if err := replaceFile(path, []byte(nodeA+"\n"+nodeB+"\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = cl.Unseal(ctx, ep, nodeA, blobA)
		if err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantCode(t, err, kms.PermissionDenied)
	if !strings.Contains(err.Error(), "deny list") {
		t.Fatalf("revocation error %q should say why", err)
	}
	// A broken deny list keeps the old one in force.
	if err := replaceFile(path, []byte("not a uuid with spaces\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err == nil {
		t.Fatal("Reload accepted a broken deny list")
	}
	_, err = cl.Unseal(ctx, ep, nodeA, blobA)
	wantCode(t, err, kms.PermissionDenied)
}

// replaceFile writes by rename, as operators should update the deny list:
// the watcher never sees a half-written file.
func replaceFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// rawCodec sends bytes as they are, to put garbage on the wire.
type rawCodec struct{}

func (rawCodec) Name() string                  { return "proto" }
func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), b...)
	return nil
}

func grpcConn(t *testing.T, ep string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(ep, "grpc://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestGarbageAndOversized(t *testing.T) {
	var audit syncBuffer
	srv, ep := serve(t, Config{MaxMessage: 1024, MaxData: 64, Audit: &audit}, pki{}, "")
	conn := grpcConn(t, ep)
	ctx := context.Background()
	invoke := func(method string, b []byte) error {
		var out []byte
		return conn.Invoke(ctx, method, &b, &out, grpc.ForceCodec(rawCodec{}))
	}
	tests := []struct {
		name   string
		method string
		body   []byte
		want   codes.Code
	}{
		{"not protobuf", kms.MethodUnseal, []byte{0xff, 0xff, 0xff}, codes.InvalidArgument},
		{"no node uuid", kms.MethodSeal, (&kms.Request{Data: secret}).Marshal(), codes.InvalidArgument},
		{"node uuid with newline", kms.MethodSeal, (&kms.Request{NodeUUID: "a\nb", Data: secret}).Marshal(), codes.InvalidArgument},
		{"nothing to seal", kms.MethodSeal, (&kms.Request{NodeUUID: nodeA}).Marshal(), codes.InvalidArgument},
		{"random blob", kms.MethodUnseal, (&kms.Request{NodeUUID: nodeA, Data: bytes.Repeat([]byte{7}, 60)}).Marshal(), codes.InvalidArgument},
		{"secret too large", kms.MethodSeal, (&kms.Request{NodeUUID: nodeA, Data: make([]byte, 65)}).Marshal(), codes.ResourceExhausted},
		{"message too large", kms.MethodUnseal, (&kms.Request{NodeUUID: nodeA, Data: make([]byte, 2048)}).Marshal(), codes.ResourceExhausted},
		{"unknown method", "/sidero.kms.KMSService/Erase", nil, codes.Unimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := invoke(tt.method, tt.body)
			if status.Code(err) != tt.want {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	// Every refused KMS call is audited, the oversized one too (grpc-go
	// refuses it before the handler); the unknown method is not a KMS call.
	srv.Shutdown(ctx) // the audit log is written asynchronously
	lines := strings.Split(strings.TrimSpace(audit.String()), "\n")
	if len(lines) != len(tests)-1 {
		t.Fatalf("audit has %d lines, want %d:\n%s", len(lines), len(tests)-1, audit.String())
	}
	if !strings.Contains(audit.String(), `"result":"ResourceExhausted","message":"grpc: received message larger than max`) {
		t.Fatalf("oversized request not audited:\n%s", audit.String())
	}
}

// sideroKMS builds the sidero.kms messages from a descriptor, so the real
// protobuf library (not our hand-written code) encodes them.
func sideroKMS(t *testing.T) (req, resp protoreflect.MessageDescriptor) {
	t.Helper()
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), JsonName: proto.String(name)}
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("sidero/kms/kms.proto"), Package: proto.String("sidero.kms"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Request"), Field: []*descriptorpb.FieldDescriptorProto{
				field("node_uuid", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING),
				field("data", 2, descriptorpb.FieldDescriptorProto_TYPE_BYTES)}},
			{Name: proto.String("Response"), Field: []*descriptorpb.FieldDescriptorProto{
				field("data", 1, descriptorpb.FieldDescriptorProto_TYPE_BYTES)}},
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("Request"), fd.Messages().ByName("Response")
}

// TestGRPCGoClient calls the server the way a Talos node does: grpc-go with
// its standard proto codec, messages encoded by the protobuf library from
// the sidero.kms descriptor.
func TestGRPCGoClient(t *testing.T) {
	_, ep := serve(t, Config{}, pki{}, "")
	conn := grpcConn(t, ep)
	ctx := context.Background()
	reqMD, respMD := sideroKMS(t)
	call := func(method, node string, data []byte) ([]byte, error) {
		req := dynamicpb.NewMessage(reqMD)
		req.Set(reqMD.Fields().ByNumber(1), protoreflect.ValueOfString(node))
		req.Set(reqMD.Fields().ByNumber(2), protoreflect.ValueOfBytes(data))
		resp := dynamicpb.NewMessage(respMD)
		if err := conn.Invoke(ctx, method, req, resp); err != nil {
			return nil, err
		}
		return resp.Get(respMD.Fields().ByNumber(1)).Bytes(), nil
	}
	sealed, err := call(kms.MethodSeal, nodeA, secret)
	if err != nil {
		t.Fatal(err)
	}
	opened, err := call(kms.MethodUnseal, nodeA, sealed)
	if err != nil || !bytes.Equal(opened, secret) {
		t.Fatalf("Unseal via grpc-go = %q, %v", opened, err)
	}
	if _, err := call(kms.MethodUnseal, nodeB, sealed); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("wrong node via grpc-go: %v, want PermissionDenied", err)
	}
	// Standard gRPC health, with the standard proto codec.
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: kms.ServiceName})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", h, err)
	}
}

func TestRateLimit(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	_, ep := serve(t, Config{Rate: 1, Burst: 2, Now: clock}, pki{}, "")
	cl := kms.New(kms.Options{Attempts: 1})
	ctx := context.Background()
	for i := range 2 {
		if _, err := cl.Seal(ctx, ep, nodeA, secret); err != nil {
			t.Fatalf("call %d within burst: %v", i, err)
		}
	}
	_, err := cl.Seal(ctx, ep, nodeA, secret)
	wantCode(t, err, kms.ResourceExhausted)
	mu.Lock()
	now = now.Add(1100 * time.Millisecond)
	mu.Unlock()
	if _, err := cl.Seal(ctx, ep, nodeA, secret); err != nil {
		t.Fatalf("after a second one token is back: %v", err)
	}
	_, err = cl.Seal(ctx, ep, nodeA, secret)
	wantCode(t, err, kms.ResourceExhausted)
}

func TestLimiterForgetsIdleClients(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLimiter(10, 5, func() time.Time { return now })
	for i := range 100 {
		l.allow(strings.Repeat("x", i))
	}
	now = now.Add(2 * time.Minute)
	l.allow("fresh")
	if len(l.buckets) != 1 {
		t.Fatalf("limiter keeps %d buckets after idle clients, want 1", len(l.buckets))
	}
}

func TestAuditLog(t *testing.T) {
	var buf syncBuffer
	srv, ep := serve(t, Config{Audit: &buf}, pki{}, "")
	cl := kms.New(kms.Options{Attempts: 1})
	ctx := context.Background()
	blob, err := cl.Seal(ctx, ep, nodeA, secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Unseal(ctx, ep, nodeA, blob); err != nil {
		t.Fatal(err)
	}
	cl.Unseal(ctx, ep, nodeB, blob)
	srv.Shutdown(ctx) // the audit log is written asynchronously
	out := buf.String()
	for _, leak := range []string{string(secret), base64.StdEncoding.EncodeToString(secret), hex.EncodeToString(secret), base64.StdEncoding.EncodeToString(blob)} {
		if strings.Contains(out, leak) {
			t.Fatalf("audit log contains secret material:\n%s", out)
		}
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("audit log has %d lines, want 3:\n%s", len(lines), out)
	}
	want := []struct{ op, node, result string }{{"seal", nodeA, "OK"}, {"unseal", nodeA, "OK"}, {"unseal", nodeB, "PermissionDenied"}}
	for i, line := range lines {
		var e event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, line)
		}
		if e.Op != want[i].op || e.NodeUUID != want[i].node || e.Result != want[i].result || e.Peer == "" || e.Time.IsZero() || e.KeyID != 1 {
			t.Errorf("line %d = %+v, want %+v with peer, time and key id", i, e, want[i])
		}
	}
}

func TestHTTPHealthAndMetrics(t *testing.T) {
	s, ep := serve(t, Config{}, pki{}, "")
	if _, err := kms.New(kms.Options{Attempts: 1}).Seal(context.Background(), ep, nodeA, secret); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.HTTPHandler())
	defer hs.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || !strings.HasPrefix(body, "ok") {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	_, body := get("/metrics")
	for _, want := range []string{`kms_requests_total{code="OK",op="seal"} 1`, "kms_keyring_keys 1", "kms_request_duration_seconds_bucket"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.Shutdown(ctx)
	if code, _ := get("/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz after shutdown = %d, want 503", code)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestClientRetriesUntilServerUp: a node boots before its KMS is back; the
// client's bounded retries carry it over.
func TestClientRetriesUntilServerUp(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	r, _ := keyring.Generate()
	s, err := New(Config{Keyring: r})
	if err != nil {
		t.Fatal(err)
	}
	blob := r.Seal(nodeA, secret)
	go func() {
		time.Sleep(300 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("re-listen on %s: %v", addr, err)
			return
		}
		s.Serve(l)
	}()
	defer s.Shutdown(context.Background())
	var failures int
	cl := kms.New(kms.Options{Attempts: 20, Backoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logf: func(string, ...any) { failures++ }})
	got, err := cl.Unseal(context.Background(), "grpc://"+addr, nodeA, blob)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	if failures == 0 {
		t.Fatal("expected failed attempts before the server came up")
	}
}

// TestGRPCGoClientTLS: a grpc-go client over TLS with a client certificate,
// as a Talos node with an https:// endpoint connects.
func TestGRPCGoClientTLS(t *testing.T) {
	p := newPKI(t)
	_, ep := serve(t, Config{BindClientCert: true}, p, "mtls")
	cas, err := kms.LoadCAs(p.path(tlsgen.CACert))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := tlsgen.ClientFiles(nodeA)
	cert, err := tls.LoadX509KeyPair(p.path(certFile), p.path(keyFile))
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: cas, Certificates: []tls.Certificate{cert}})
	conn, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(ep, "https://"), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	req := (&kms.Request{NodeUUID: nodeA, Data: secret}).Marshal()
	var out []byte
	if err := conn.Invoke(ctx, kms.MethodSeal, &req, &out, grpc.ForceCodec(rawCodec{})); err != nil {
		t.Fatal(err)
	}
	var resp kms.Response
	if err := resp.Unmarshal(out); err != nil {
		t.Fatal(err)
	}
	req = (&kms.Request{NodeUUID: nodeA, Data: resp.Data}).Marshal()
	if err := conn.Invoke(ctx, kms.MethodUnseal, &req, &out, grpc.ForceCodec(rawCodec{})); err != nil {
		t.Fatal(err)
	}
	if err := resp.Unmarshal(out); err != nil || !bytes.Equal(resp.Data, secret) {
		t.Fatalf("Unseal over grpc-go TLS = %q, %v", resp.Data, err)
	}
	req = (&kms.Request{NodeUUID: nodeB, Data: resp.Data}).Marshal()
	if err := conn.Invoke(ctx, kms.MethodUnseal, &req, &out, grpc.ForceCodec(rawCodec{})); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("node A's certificate asking for node B: %v, want PermissionDenied", err)
	}
}

// TestShutdownWaitsForRunningHandler: a request still in its handler when
// the grace period is over (Shutdown with an expired context) is audited:
// Shutdown waits for the handler before it closes the audit log, so the
// record is written, not dropped.
func TestShutdownWaitsForRunningHandler(t *testing.T) {
	var buf syncBuffer
	r, err := keyring.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Keyring: r, Audit: &buf})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.handleHook = func() {
		once.Do(func() { close(entered) })
		<-release
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	called := make(chan error, 1)
	go func() {
		_, err := kms.New(kms.Options{Attempts: 1}).Seal(context.Background(), "grpc://"+lis.Addr().String(), nodeA, secret)
		called <- err
	}()
	select {
	case <-entered:
	case err := <-called:
		t.Fatalf("the request never reached the handler: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the handler")
	}
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	stopped := make(chan struct{})
	go func() { s.Shutdown(expired); close(stopped) }()
	select {
	case <-stopped: // too early: the handler still runs
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the handler did")
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	<-called
	if n := s.audit.droppedCount(); n != 0 {
		t.Errorf("%d audit records dropped; the handler's record must be written", n)
	}
	if out := buf.String(); !strings.Contains(out, `"op":"seal"`) {
		t.Errorf("audit log lacks the request that was running at shutdown:\n%s", out)
	}
}
