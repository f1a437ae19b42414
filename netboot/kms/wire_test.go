package kms

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// sideroKMSFile is sidero/kms/kms.proto rebuilt as a descriptor, so the
// real protobuf library can encode and decode the same messages.
func sideroKMSFile(t testing.TB) protoreflect.FileDescriptor {
	t.Helper()
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{
			Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), JsonName: proto.String(name),
		}
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("sidero/kms/kms.proto"),
		Package: proto.String("sidero.kms"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Request"), Field: []*descriptorpb.FieldDescriptorProto{
				field("node_uuid", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING),
				field("data", 2, descriptorpb.FieldDescriptorProto_TYPE_BYTES),
			}},
			{Name: proto.String("Response"), Field: []*descriptorpb.FieldDescriptorProto{
				field("data", 1, descriptorpb.FieldDescriptorProto_TYPE_BYTES),
			}},
		},
	}
	fd, err := protodesc.NewFile(fdp, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestRequestMatchesProtobuf(t *testing.T) {
	md := sideroKMSFile(t).Messages().ByName("Request")
	tests := []Request{
		{},
		{NodeUUID: "2b9fa5f0-2f4b-4b8c-9d64-7b1d3c1e0a11"},
		{Data: []byte{0, 1, 2, 255}},
		{NodeUUID: "n", Data: bytes.Repeat([]byte{0xAA}, 300)}, // two-byte length varint
	}
	for _, r := range tests {
		dyn := dynamicpb.NewMessage(md)
		if r.NodeUUID != "" {
			dyn.Set(md.Fields().ByNumber(1), protoreflect.ValueOfString(r.NodeUUID))
		}
		if len(r.Data) > 0 {
			dyn.Set(md.Fields().ByNumber(2), protoreflect.ValueOfBytes(r.Data))
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(dyn)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Marshal(); !bytes.Equal(got, want) {
			t.Errorf("Marshal(%+v) = %x, protobuf gives %x", r, got, want)
		}
		var back Request
		if err := back.Unmarshal(want); err != nil || back.NodeUUID != r.NodeUUID || !bytes.Equal(back.Data, r.Data) {
			t.Errorf("Unmarshal(protobuf %x) = %+v, %v; want %+v", want, back, err, r)
		}
	}
}

func TestResponseMatchesProtobuf(t *testing.T) {
	md := sideroKMSFile(t).Messages().ByName("Response")
	r := Response{Data: []byte("sealed-blob")}
	got := r.Marshal()
	dyn := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(got, dyn); err != nil {
		t.Fatal(err)
	}
	if b := dyn.Get(md.Fields().ByNumber(1)).Bytes(); !bytes.Equal(b, r.Data) {
		t.Fatalf("protobuf decodes our Response as %q, want %q", b, r.Data)
	}
}

// TestWireByFieldNumbers encodes by hand from the field numbers of the
// sidero.kms proto, independently of Marshal.
func TestWireByFieldNumbers(t *testing.T) {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "uuid")
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{9, 8})
	// The same bytes spelt out: tag (1<<3|2)=0x0a, len 4; tag (2<<3|2)=0x12, len 2.
	want := []byte{0x0a, 4, 'u', 'u', 'i', 'd', 0x12, 2, 9, 8}
	if !bytes.Equal(b, want) {
		t.Fatalf("protowire gave %x, want %x", b, want)
	}
	if got := (&Request{NodeUUID: "uuid", Data: []byte{9, 8}}).Marshal(); !bytes.Equal(got, want) {
		t.Fatalf("Request.Marshal = %x, want %x", got, want)
	}
	if got := (&Response{Data: []byte{7}}).Marshal(); !bytes.Equal(got, []byte{0x0a, 1, 7}) {
		t.Fatalf("Response.Marshal = %x, want 0a0107", got)
	}
}

func TestUnmarshalSkipsUnknownAndRejectsGarbage(t *testing.T) {
	var b []byte
	b = protowire.AppendTag(b, 7, protowire.VarintType)
	b = protowire.AppendVarint(b, 300)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "first")
	b = protowire.AppendTag(b, 9, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 1)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "last")
	var r Request
	if err := r.Unmarshal(b); err != nil || r.NodeUUID != "last" {
		t.Fatalf("Unmarshal = %+v, %v; want NodeUUID last (last one wins)", r, err)
	}

	bad := map[string][]byte{
		"truncated length": {0x0a, 10, 'x'},
		"bad tag":          {0x80},
		"varint node_uuid": {0x08, 1},
		"invalid utf-8":    {0x0a, 1, 0xff},
		"field zero":       {0x02, 0},
	}
	for name, b := range bad {
		if err := r.Unmarshal(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Unmarshal(%x) err = %v, want ErrMalformed", name, b, err)
		}
	}
}

func FuzzRequestRoundTrip(f *testing.F) {
	f.Add([]byte{0x0a, 4, 'u', 'u', 'i', 'd', 0x12, 2, 9, 8})
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		if err := r.Unmarshal(b); err != nil {
			return
		}
		var again Request
		if err := again.Unmarshal(r.Marshal()); err != nil || again.NodeUUID != r.NodeUUID || !bytes.Equal(again.Data, r.Data) {
			t.Fatalf("round trip of %x: %+v -> %+v, %v", b, r, again, err)
		}
	})
}
