package kms

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// h2cServer is a tiny gRPC-over-HTTP/2 responder for client-side cases the
// real server never produces on purpose (the real server is tested against
// this client in cmd/kms-server/internal/server).
func h2cServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: p}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return "grpc://" + lis.Addr().String()
}

func grpcReply(w http.ResponseWriter, code Code, msg string, body []byte) {
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
	w.WriteHeader(http.StatusOK)
	if body != nil {
		w.Write(frame(body))
	}
	w.Header().Set("Grpc-Status", strconv.Itoa(int(code)))
	w.Header().Set("Grpc-Message", url.PathEscape(msg))
}

func fastOptions(attempts int) Options {
	return Options{Attempts: attempts, AttemptTimeout: 2 * time.Second, Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
}

func TestClientRetriesThenSucceeds(t *testing.T) {
	var calls atomic.Int32
	ep := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req Request
		if err := req.Unmarshal(b[5:]); err != nil || req.NodeUUID != "n1" || r.URL.Path != MethodUnseal || r.Header.Get("Te") != "trailers" {
			grpcReply(w, InvalidArgument, "bad request", nil)
			return
		}
		if calls.Add(1) < 3 {
			grpcReply(w, Unavailable, "warming up", nil)
			return
		}
		grpcReply(w, OK, "", (&Response{Data: append([]byte("key:"), req.Data...)}).Marshal())
	})
	var logged int
	opts := fastOptions(5)
	opts.Logf = func(string, ...any) { logged++ }
	got, err := New(opts).Unseal(context.Background(), ep, "n1", []byte("blob"))
	if err != nil || string(got) != "key:blob" {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	if calls.Load() != 3 || logged != 2 {
		t.Fatalf("calls = %d, logged failures = %d; want 3 and 2", calls.Load(), logged)
	}
}

func TestClientDoesNotRetryRefusal(t *testing.T) {
	var calls atomic.Int32
	ep := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		grpcReply(w, PermissionDenied, "node n1 is on the deny list (revoked)", nil)
	})
	_, err := New(fastOptions(5)).Unseal(context.Background(), ep, "n1", []byte("blob"))
	if !errors.Is(err, ErrRefused) || errors.Is(err, ErrUnreachable) || calls.Load() != 1 {
		t.Fatalf("err = %v after %d calls; want ErrRefused after 1", err, calls.Load())
	}
	if !strings.Contains(err.Error(), "deny list (revoked)") {
		t.Fatalf("err %q lost the server's message", err)
	}
}

func TestClientServerDown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	var logged int
	opts := fastOptions(3)
	opts.Logf = func(string, ...any) { logged++ }
	start := time.Now()
	_, err = New(opts).Unseal(context.Background(), addr, "n1", []byte("blob"))
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	msg := err.Error()
	for _, want := range []string{addr, "3 attempt", "connection refused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if logged != 3 {
		t.Errorf("logged %d failed attempts, want 3", logged)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("3 bounded attempts took %v", d)
	}
}

func TestClientHonoursContext(t *testing.T) {
	ep := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		grpcReply(w, Unavailable, "busy", nil)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	opts := fastOptions(1000)
	opts.Backoff, opts.MaxBackoff = 30*time.Millisecond, 30*time.Millisecond
	_, err := New(opts).Seal(ctx, ep, "n1", []byte("k"))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable and DeadlineExceeded", err)
	}
}

func TestClientRejectsBadResponses(t *testing.T) {
	tests := map[string]http.HandlerFunc{
		"not grpc": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html>"))
		},
		"no status": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.Write(frame(nil))
		},
		"short frame": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status")
			w.Write([]byte{0, 0, 0, 0, 9, 1})
			w.Header().Set("Grpc-Status", "0")
		},
		"http 404": func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
	}
	for name, h := range tests {
		t.Run(name, func(t *testing.T) {
			ep := h2cServer(t, h)
			_, err := New(fastOptions(2)).Unseal(context.Background(), ep, "n1", []byte("blob"))
			var st *StatusError
			if !errors.As(err, &st) {
				t.Fatalf("err = %v, want a StatusError", err)
			}
		})
	}
}

// A bare host:port means TLS. Against a plaintext KMS the client must not
// fall back to plaintext: it fails with an error naming the endpoint and
// telling to write grpc:// for a plaintext KMS.
func TestClientBareEndpointIsTLS(t *testing.T) {
	var calls atomic.Int32
	ep := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		grpcReply(w, OK, "", (&Response{Data: []byte("key")}).Marshal())
	})
	bare := strings.TrimPrefix(ep, "grpc://")
	// The same server answers when plaintext is asked for by name. The same
	// client then must not reuse that plaintext connection for the TLS
	// endpoint at the same address.
	cl := New(fastOptions(3))
	defer cl.Close()
	if _, err := cl.Unseal(context.Background(), ep, "n1", []byte("blob")); err != nil {
		t.Fatalf("grpc://: %v", err)
	}
	calls.Store(0)
	_, err := cl.Unseal(context.Background(), bare, "n1", []byte("blob"))
	if err == nil {
		t.Fatalf("a bare endpoint reached a plaintext server in plaintext (%d calls)", calls.Load())
	}
	if calls.Load() != 0 {
		t.Fatalf("the plaintext server handled %d calls for a bare endpoint", calls.Load())
	}
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("err = %v, want ErrUnreachable", err)
	}
	for _, want := range []string{"https://" + bare, "grpc://" + bare, "no scheme, which means TLS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestClientErrorsOmitNodeUUID: the node UUID is nodeID key material; no
// KMS client error names it, neither ours nor a server message that does.
func TestClientErrorsOmitNodeUUID(t *testing.T) {
	const node = "5d3c4e2a-9b1f-4c7d-8e6a-2f0b1a9c7e34"
	const other = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f" // the certificate's node
	for _, tc := range []struct {
		name string
		code Code
		msg  string
		want error
	}{
		{"too large", ResourceExhausted, "data to seal is 65 bytes, at most 64 allowed", ErrTooLarge},
		{"denied", PermissionDenied, "node " + node + " is on the deny list (revoked)", ErrRefused},
		{"other certificate", PermissionDenied, `client certificate "` + strings.ToUpper(other) + `" is not node ` + node, ErrRefused},
		{"bad blob", InvalidArgument, "nothing to seal for node " + node + ": data is empty", ErrBadBlob},
		{"rate limited", ResourceExhausted, "rate limit for client 10.0.0.5 exceeded (5 requests/s, burst 20); retry later", ErrRateLimited},
		{"internal", Internal, "unseal for node " + node + ": boom", ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := h2cServer(t, func(w http.ResponseWriter, r *http.Request) { grpcReply(w, tc.code, tc.msg, nil) })
			c := New(fastOptions(2))
			defer c.Close()
			_, err := c.Seal(context.Background(), ep, node, make([]byte, 65))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if msg := strings.ToLower(err.Error()); strings.Contains(msg, node) || strings.Contains(msg, other) {
				t.Errorf("error names a node UUID: %v", err)
			}
		})
	}
}
