package main

import (
	"context"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cryptinit/cryptinit/netboot/kms"
)

type codec struct{}

func (codec) Name() string                    { return "proto" }
func (codec) Marshal(v any) ([]byte, error)   { return v.(*kms.Request).Marshal(), nil }
func (codec) Unmarshal(b []byte, v any) error { return v.(*kms.Response).Unmarshal(b) }

func main() {
	creds := insecure.NewCredentials()
	if len(os.Args) > 4 {
		creds = credentials.NewClientTLSFromCert(nil, "")
	}
	conn, err := grpc.NewClient(os.Args[1], grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{})))
	if err != nil {
		panic(err)
	}
	var resp kms.Response
	err = conn.Invoke(context.Background(), kms.MethodUnseal, &kms.Request{NodeUUID: os.Args[2], Data: []byte(os.Args[3])}, &resp)
	fmt.Println(len(resp.Data), err)
}
