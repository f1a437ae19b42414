package server

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/cryptinit/cryptinit/netboot/kms"
)

// rawMessage carries a request body undecoded into the handler, which then
// decodes it itself: a garbage request is the client's fault
// (InvalidArgument), while grpc-go would report a codec failure as Internal.
type rawMessage struct{ b []byte }

// codec is the server's only codec: the hand-written sidero.kms messages,
// and real protobuf messages for the services that have them (health).
// It registers under the name "proto", the content-subtype clients send.
type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *kms.Response:
		return m.Marshal(), nil
	case *kms.Request:
		return m.Marshal(), nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("codec: cannot marshal %T", v)
}

func (codec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *rawMessage:
		m.b = append(m.b[:0], data...)
		return nil
	case *kms.Request:
		return m.Unmarshal(data)
	case *kms.Response:
		return m.Unmarshal(data)
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("codec: cannot unmarshal into %T", v)
}
