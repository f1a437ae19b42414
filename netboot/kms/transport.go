package kms

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxResponse bounds what the client reads from a server: a KMS response is
// a few hundred bytes.
const maxResponse = 1 << 20

// frame wraps a message in gRPC length-prefixed framing: one flag byte (0,
// not compressed) and a big-endian 32-bit length.
func frame(msg []byte) []byte {
	b := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:5], uint32(len(msg)))
	copy(b[5:], msg)
	return b
}

// unframe returns the single message in a unary gRPC response body.
func unframe(b []byte) ([]byte, error) {
	if len(b) < 5 {
		return nil, &StatusError{Code: Internal, Message: fmt.Sprintf("response has %d bytes, want a 5-byte gRPC frame header", len(b))}
	}
	if b[0] != 0 {
		return nil, &StatusError{Code: Internal, Message: "response is compressed; the client asked for none"}
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(n) != uint64(len(b)-5) {
		return nil, &StatusError{Code: Internal, Message: fmt.Sprintf("response frame says %d bytes, body has %d", n, len(b)-5)}
	}
	return b[5:], nil
}

// unary makes one unary gRPC call over HTTP/2 and returns the response
// message. gRPC errors come back as *StatusError; anything else is a
// transport failure.
func (c *Client) unary(ctx context.Context, ep Endpoint, method string, msg []byte, timeout time.Duration) ([]byte, error) {
	scheme := "http"
	if ep.TLS {
		scheme = "https"
	}
	body := frame(msg)
	defer clear(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, scheme+"://"+ep.Address+method, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/grpc+proto")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", "cryptinit-kms/1")
	if timeout > 0 {
		req.Header.Set("Grpc-Timeout", strconv.FormatInt(timeout.Milliseconds(), 10)+"m")
	}
	resp, err := c.transport(ep).RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{Code: httpStatusCode(resp.StatusCode), Message: "HTTP status " + resp.Status}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/grpc") {
		return nil, &StatusError{Code: Unknown, Message: fmt.Sprintf("content-type %q is not gRPC", ct)}
	}
	// A trailers-only response carries the status in the headers.
	if st, ok := status(resp.Header); ok && st != nil {
		return nil, st
	}
	buf, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	defer clear(buf)
	if err != nil {
		return nil, err
	}
	if len(buf) > maxResponse {
		return nil, &StatusError{Code: ResourceExhausted, Message: fmt.Sprintf("response is larger than %d bytes", maxResponse)}
	}
	st, ok := status(resp.Trailer)
	if !ok {
		if st, ok = status(resp.Header); !ok {
			return nil, &StatusError{Code: Internal, Message: "server sent no grpc-status"}
		}
	}
	if st != nil {
		return nil, st
	}
	m, err := unframe(buf)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(m), nil
}

// status reads grpc-status and grpc-message from h. ok is false when h has
// no grpc-status; a nil *StatusError means OK.
func status(h http.Header) (*StatusError, bool) {
	v := h.Get("Grpc-Status")
	if v == "" {
		return nil, false
	}
	code, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return &StatusError{Code: Unknown, Message: fmt.Sprintf("bad grpc-status %q", v)}, true
	}
	if code == 0 {
		return nil, true
	}
	msg := h.Get("Grpc-Message")
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	return &StatusError{Code: Code(code), Message: msg}, true
}

// httpStatusCode maps an HTTP status to a gRPC code as the gRPC HTTP/2
// protocol specifies for responses without grpc-status.
func httpStatusCode(s int) Code {
	switch s {
	case http.StatusBadRequest:
		return Internal
	case http.StatusUnauthorized:
		return Unauthenticated
	case http.StatusForbidden:
		return PermissionDenied
	case http.StatusNotFound:
		return Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return Unavailable
	}
	return Unknown
}
