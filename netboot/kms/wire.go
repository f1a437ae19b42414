// Package kms is the client side of the sidero.kms.KMSService gRPC API: the
// wire messages, written by hand with protowire so that the init needs no
// generated code, and a small unary gRPC client over HTTP/2.
package kms

import (
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Method paths of sidero.kms.KMSService, as Talos nodes call them.
const (
	ServiceName  = "sidero.kms.KMSService"
	MethodSeal   = "/sidero.kms.KMSService/Seal"
	MethodUnseal = "/sidero.kms.KMSService/Unseal"
)

// Field numbers from the sidero.kms proto definition.
const (
	requestNodeUUIDField protowire.Number = 1
	requestDataField     protowire.Number = 2
	responseDataField    protowire.Number = 1
)

// ErrMalformed reports a message that is not a valid protobuf encoding of
// Request or Response.
var ErrMalformed = errors.New("kms: malformed message")

// Request is sidero.kms.Request{string node_uuid = 1; bytes data = 2}.
type Request struct {
	NodeUUID string
	Data     []byte
}

// Response is sidero.kms.Response{bytes data = 1}.
type Response struct {
	Data []byte
}

// Marshal encodes r in proto3 form: empty fields are omitted.
func (r *Request) Marshal() []byte {
	b := make([]byte, 0, len(r.NodeUUID)+len(r.Data)+8)
	if r.NodeUUID != "" {
		b = protowire.AppendTag(b, requestNodeUUIDField, protowire.BytesType)
		b = protowire.AppendString(b, r.NodeUUID)
	}
	if len(r.Data) > 0 {
		b = protowire.AppendTag(b, requestDataField, protowire.BytesType)
		b = protowire.AppendBytes(b, r.Data)
	}
	return b
}

// Unmarshal decodes b into r. Unknown fields are skipped, as protobuf
// requires; for a repeated singular field the last one wins. Data is copied.
func (r *Request) Unmarshal(b []byte) error {
	*r = Request{}
	return walk(b, []protowire.Number{requestNodeUUIDField, requestDataField}, func(num protowire.Number, v []byte) error {
		switch num {
		case requestNodeUUIDField:
			if !utf8.Valid(v) {
				return fmt.Errorf("%w: node_uuid is not valid UTF-8", ErrMalformed)
			}
			r.NodeUUID = string(v)
		case requestDataField:
			r.Data = append([]byte(nil), v...)
		}
		return nil
	})
}

// Marshal encodes r in proto3 form.
func (r *Response) Marshal() []byte {
	b := make([]byte, 0, len(r.Data)+4)
	if len(r.Data) > 0 {
		b = protowire.AppendTag(b, responseDataField, protowire.BytesType)
		b = protowire.AppendBytes(b, r.Data)
	}
	return b
}

// Unmarshal decodes b into r. Data is copied.
func (r *Response) Unmarshal(b []byte) error {
	*r = Response{}
	return walk(b, []protowire.Number{responseDataField}, func(num protowire.Number, v []byte) error {
		if num == responseDataField {
			r.Data = append([]byte(nil), v...)
		}
		return nil
	})
}

// walk calls fn for every length-delimited field of b and checks that every
// other field is well formed. Both our messages only have bytes-like fields,
// so a known field number with another wire type is an error; unknown fields
// are skipped.
func walk(b []byte, known []protowire.Number, fn func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: bad tag: %v", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if slices.Contains(known, num) {
				return fmt.Errorf("%w: field %d has wire type %d, want bytes", ErrMalformed, num, typ)
			}
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, v); err != nil {
			return err
		}
	}
	return nil
}
