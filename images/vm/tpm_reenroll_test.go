package vm

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// certDER reads a PEM certificate and returns its DER bytes.
func certDER(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s holds no PEM certificate", path)
	}
	return blk.Bytes
}

// enrollment is a volume's keyslots and tokens without the cryptinit-sync
// token (its fingerprint may be rewritten by any sync), one line each.
func enrollment(t *testing.T, n *Node, vol string) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(tokensAndSlots(luksHeader(t, n.Disks[0], vol))), "\n") {
		if !strings.Contains(l, "cryptinit-sync") {
			lines = append(lines, l)
		}
	}
	return lines
}

// slotLines are the lines of an enrollment about keyslot slot: the keyslot
// and the tokens bound to it.
func slotLines(lines []string, slot string) string {
	var b strings.Builder
	for _, l := range lines {
		if strings.HasPrefix(l, "slot "+slot+" ") || (strings.HasPrefix(l, "token ") && regexp.MustCompile(`"keyslots":\s*\[\s*"`+slot+`"\s*\]`).MatchString(l)) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// TestVMTPMReenrollAfterDBUpdate is issue 5 item 6: STATE's TPM key bound to
// PCR 7 alone, with tpm.reenrollOnPCRChange. Boot 1 (Secure Boot, the
// build's keys) formats STATE with the TPM key in slot 0. Then the node's
// Secure Boot db gets a second certificate (enrolled by systemd-boot with the
// same PK and KEK; the UKI stays signed by the first db key), which changes
// PCR 7: boot 2 opens STATE with the nodeID slot and re-seals slot 0 to the
// new PCR 7. Boot 3, same variables, opens with the TPM slot again and
// leaves the enrollment as it is.
func TestVMTPMReenrollAfterDBUpdate(t *testing.T) {
	a, n := tpmNode(t, "reenroll")
	cfg, err := os.ReadFile(filepath.Join("..", "testdata", "tpm-reenroll.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	vm, r := n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: cfg, Cmdline: fastFail})
	mustMarker(t, r, "/system/state", 0)
	mustSay(t, vm, `STATE: formatted .* with slot 0 \(tpm`)
	boot1 := enrollment(t, n, "STATE")
	if slotLines(boot1, "0") == "" || slotLines(boot1, "1") == "" {
		t.Fatalf("after boot 1 STATE lacks slot 0 or 1:\n%s", strings.Join(boot1, "\n"))
	}

	// The db update: the build's db certificate plus a new one.
	dir := t.TempDir()
	crt, _, err := ExtraDBCert(dir, "db2")
	if err != nil {
		t.Fatal(err)
	}
	vars, err := EnrollVars(a, dir, crt)
	if err != nil {
		t.Fatal(err)
	}
	store, err := os.ReadFile(vars)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{a.DBCert, crt} {
		if !bytes.Contains(store, certDER(t, c)) {
			t.Fatalf("the new variable store lacks the db certificate %s (enrollment console %s)", c, filepath.Join(dir, "enroll-console.log"))
		}
	}
	if err := n.UseVars(SecureBoot, vars); err != nil {
		t.Fatal(err)
	}

	vm, r = n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: cfg, Cmdline: fastFail})
	mustMarker(t, r, "/system/state", 1)
	// The TPM itself says the policy failed on PCR 7, the only bound PCR.
	mustSay(t, vm, `STATE: +slot 0 \(tpm\): .*PCRs \[7\] differ from sealing time`)
	mustSay(t, vm, `STATE: opened with slot 1 \(nodeID`)
	mustSay(t, vm, `STATE: key slots: replaced \[0\]; slot 0: tpm re-enrolled: PCR 7 changed`)
	boot2 := enrollment(t, n, "STATE")
	if slotLines(boot2, "0") == "" || slotLines(boot2, "0") == slotLines(boot1, "0") {
		t.Errorf("STATE's slot 0 was not re-enrolled:\nboot 1:\n%s\nboot 2:\n%s", slotLines(boot1, "0"), slotLines(boot2, "0"))
	}
	if slotLines(boot2, "1") != slotLines(boot1, "1") {
		t.Errorf("STATE's nodeID slot 1 changed:\nboot 1:\n%s\nboot 2:\n%s", slotLines(boot1, "1"), slotLines(boot2, "1"))
	}

	vm, r = n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: cfg, Cmdline: fastFail})
	mustMarker(t, r, "/system/state", 2)
	mustSay(t, vm, `STATE: opened with slot 0 \(tpm`)
	if boot3 := enrollment(t, n, "STATE"); strings.Join(boot3, "\n") != strings.Join(boot2, "\n") {
		t.Errorf("STATE's enrollment changed on boot 3:\nboot 2:\n%s\nboot 3:\n%s", strings.Join(boot2, "\n"), strings.Join(boot3, "\n"))
	}
}
