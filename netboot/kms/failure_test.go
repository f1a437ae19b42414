package kms

import (
	"errors"
	"testing"
)

// TestResourceExhaustedKinds: the ResourceExhausted statuses kms-server and
// grpc-go send map to "too large" (not retried) or "rate limited"
// (retried), never both.
func TestResourceExhaustedKinds(t *testing.T) {
	for _, tc := range []struct {
		msg      string
		tooLarge bool
	}{
		{"rate limit for client 10.0.0.5 exceeded (5 requests/s, burst 20); retry later", false},
		{"data to seal is 65 bytes, at most 64 allowed", true},
		{"grpc: received message larger than max (2089 vs. 1024)", true},
		{"response is larger than 1048576 bytes", true},
		{"grpc: received message larger than max length allowed on current machine (9 vs. 8)", true},
		{"grpc: received message after decompression larger than max 1024", true},
		{"grpc: message after decompression larger than max (2089 vs. 1024)", true},
		{"trying to send message larger than max (2089 vs. 1024)", true},
		{"quota exceeded", false},
		// near misses: a size word in a message that is not one of the
		// exact phrases is a rate limit, not a size
		{"too large", false},
		{"request queue too large; retry later", false},
		{"node UUID is 200 bytes, at most 128 allowed", false},
		{"backlog larger than max; slow down", false},
		{"data to seal is many bytes, at most 64 allowed", false},
	} {
		st := &StatusError{Code: ResourceExhausted, Message: tc.msg}
		if got := errors.Is(st, ErrTooLarge); got != tc.tooLarge {
			t.Errorf("%q: ErrTooLarge = %v, want %v", tc.msg, got, tc.tooLarge)
		}
		if got := errors.Is(st, ErrRateLimited); got == tc.tooLarge {
			t.Errorf("%q: ErrRateLimited = %v, want %v", tc.msg, got, !tc.tooLarge)
		}
		if st.retryable() == tc.tooLarge {
			t.Errorf("%q: retryable = %v, want %v", tc.msg, st.retryable(), !tc.tooLarge)
		}
	}
	if errors.Is(&StatusError{Code: Unavailable, Message: "rate limit"}, ErrRateLimited) {
		t.Error("a status other than ResourceExhausted is ErrRateLimited")
	}
}
