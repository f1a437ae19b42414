package vm

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cryptinit/cryptinit/internal/testenv"
	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/tpm/swtpmtest"
)

// TestVMCryptenrollSwtpmState: the real systemd-cryptenroll (Debian 12,
// systemd 252) enrolls STATE's keyslot 1 on the host, over swtpm running on
// the node's own TPM state, with a signed PCR 11 policy for the image's PCR
// key (--tpm2-public-key, --tpm2-public-key-pcrs=11, no hash-bound PCRs:
// the host's swtpm has no firmware PCR 7); the next boot, with that state as
// the VM's TPM, must open STATE with slot 1 through systemd's token and the
// UKI's .pcrsig.
func TestVMCryptenrollSwtpmState(t *testing.T) {
	a := RequireInit(t)
	if a.PCRKey == "" {
		testenv.Missing(t, "the image build had no cryptctl pcr sign: the UKI carries no PCR 11 policy")
	}
	enroll, err := exec.LookPath("systemd-cryptenroll")
	if err != nil {
		t.Fatalf("systemd-cryptenroll not installed (apt-get install systemd): %v", err)
	}
	t.Parallel()
	n := NewNode(t, a, "cryptenroll", TalosLayout())
	n.TPM = true
	useProbeRoot(t, n, nil)
	n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: []byte(systemdSetupConfig), Cmdline: fastFail})

	pemKey, err := os.ReadFile(a.PCRKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm.ParsePrivateKeyPEM(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tpm.MarshalPublicKeyPEM(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(t.TempDir(), "tpm2-pcr-public-key.pem")
	if err := os.WriteFile(pubFile, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	err = n.Disks[0].EditPartition("STATE", func(file string) error {
		sw := swtpmtest.Start(t, n.tpmState)
		defer sw.Stop() // before the next boot uses the state
		port := sw.Conn.RemoteAddr().(*net.TCPAddr).Port
		_ = sw.Conn.Close() // swtpm serves one connection: systemd's
		cmd := exec.Command(enroll, "--tpm2-device="+fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port),
			"--tpm2-pcrs=", "--tpm2-public-key="+pubFile, "--tpm2-public-key-pcrs=11", file)
		cmd.Env = append(os.Environ(), "PASSWORD="+systemdSetupPassphrase)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("systemd-cryptenroll: %v\n%s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h := luksHeader(t, n.Disks[0], "STATE")
	found := false
	for _, tok := range h.Tokens {
		found = found || tok.Type == "systemd-tpm2" && slices.Equal(tok.Keyslots, []int{1})
	}
	if !found {
		t.Fatalf("systemd-cryptenroll did not put a systemd-tpm2 token on keyslot 1:\n%s", tokensAndSlots(h))
	}

	vm, r := n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: []byte(systemdConfig), Cmdline: fastFail})
	mustMarker(t, r, "/system/state", 1)
	mustSay(t, vm, `STATE: opened with slot 1 \(tpm`)
}
