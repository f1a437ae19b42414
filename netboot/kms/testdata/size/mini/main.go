package main

import (
	"context"
	"fmt"
	"os"

	"github.com/cryptinit/cryptinit/netboot/kms"
)

func main() {
	b, err := kms.New(kms.Options{}).Unseal(context.Background(), os.Args[1], os.Args[2], []byte(os.Args[3]))
	fmt.Println(len(os.Args), len(b), err)
}
