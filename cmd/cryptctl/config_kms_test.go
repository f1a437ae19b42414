package main

import (
	"strings"
	"testing"
)

// configs/kms.yaml talks to a plaintext lab KMS: validate accepts it and
// warns, per key, that the sealed blob crosses the network in clear.
func TestConfigValidateWarnsPlaintextKMS(t *testing.T) {
	out, err := cryptctl(t, "config", "validate", "../../configs/kms.yaml")
	if err != nil || !strings.Contains(out, "ok (2 volumes)") {
		t.Fatalf("%v\n%s", err, out)
	}
	// the lab config's small argon2 memory gets a warning of its own
	if n := strings.Count(out, "warning: ") - strings.Count(out, "is under 64 MiB"); n != 2 || strings.Count(out, "grpc://10.0.2.2:4050 is plaintext gRPC") != 2 {
		t.Fatalf("want one plaintext warning per kms key (2), got %d:\n%s", n, out)
	}
}
