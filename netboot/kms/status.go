package kms

import (
	"errors"
	"fmt"
)

// Code is a gRPC status code. The values are fixed by the gRPC protocol; the
// client keeps its own copy so that the init does not link grpc-go.
type Code uint32

// gRPC status codes used by the client and the server.
const (
	OK                 Code = 0
	Canceled           Code = 1
	Unknown            Code = 2
	InvalidArgument    Code = 3
	DeadlineExceeded   Code = 4
	NotFound           Code = 5
	AlreadyExists      Code = 6
	PermissionDenied   Code = 7
	ResourceExhausted  Code = 8
	FailedPrecondition Code = 9
	Aborted            Code = 10
	OutOfRange         Code = 11
	Unimplemented      Code = 12
	Internal           Code = 13
	Unavailable        Code = 14
	DataLoss           Code = 15
	Unauthenticated    Code = 16
)

var codeNames = [...]string{
	"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
	"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
	"Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
	"Unauthenticated",
}

func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("Code(%d)", uint32(c))
}

// Sentinel errors for the decisions a caller makes on a KMS failure.
var (
	// ErrRefused: the KMS answered and refused this node (denied, wrong
	// node, unauthenticated). Retrying will not help; the node may be revoked.
	ErrRefused = errors.New("kms refused the request")
	// ErrBadBlob: the KMS could not open the sealed blob (corrupt, or made
	// by another KMS or master key).
	ErrBadBlob = errors.New("kms could not open the sealed data")
	// ErrUnreachable: no answer from the KMS after every attempt.
	ErrUnreachable = errors.New("kms unreachable")
)

// StatusError is a gRPC status returned by the server.
type StatusError struct {
	Code    Code
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("rpc error: code = %s desc = %s", e.Code, e.Message)
}

// Is maps status codes onto the package's sentinel errors.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrRefused:
		return e.Code == PermissionDenied || e.Code == Unauthenticated
	case ErrBadBlob:
		return e.Code == InvalidArgument || e.Code == DataLoss || e.Code == FailedPrecondition
	case ErrTooLarge:
		return e.Code == ResourceExhausted && resourceTooLarge(e.Message)
	case ErrRateLimited:
		return e.Code == ResourceExhausted && !resourceTooLarge(e.Message)
	}
	return false
}

// retryable reports whether the status may go away on its own: a rate
// limit passes, a message too large stays too large.
func (e *StatusError) retryable() bool {
	if e.Code == ResourceExhausted && resourceTooLarge(e.Message) {
		return false
	}
	return e.Code.retryable()
}

// retryable reports whether a status may go away on its own.
func (c Code) retryable() bool {
	switch c {
	case Unavailable, DeadlineExceeded, ResourceExhausted, Aborted, Unknown, Internal:
		return true
	}
	return false
}
