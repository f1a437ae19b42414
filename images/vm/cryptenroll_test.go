package vm

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

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

	cryptenrollOnNode(t, a, n, enroll)

	vm, r := n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: []byte(systemdConfig), Cmdline: fastFail})
	mustMarker(t, r, "/system/state", 1)
	mustSay(t, vm, `STATE: opened with slot 1 \(tpm`)
}

// cryptenrollOnNode runs systemd-cryptenroll (extra args and environment
// added) on the node's STATE partition over swtpm on the node's TPM state,
// with a signed PCR 11 policy for the image's PCR key and no hash-bound
// PCRs, and checks keyslot 1 got a systemd-tpm2 token.
func cryptenrollOnNode(t *testing.T, a *Artifacts, n *Node, enroll string, extra ...string) {
	t.Helper()
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
	var args, env []string
	for _, e := range extra {
		if strings.HasPrefix(e, "--") {
			args = append(args, e)
		} else {
			env = append(env, e)
		}
	}
	err = n.Disks[0].EditPartition("STATE", func(file string) error {
		sw := swtpmtest.Start(t, n.tpmState)
		defer sw.Stop() // before the next boot uses the state
		port := sw.Conn.RemoteAddr().(*net.TCPAddr).Port
		_ = sw.Conn.Close() // swtpm serves one connection: systemd's
		cmd := exec.Command(enroll, append([]string{"--tpm2-device=" + fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port),
			"--tpm2-pcrs=", "--tpm2-public-key=" + pubFile, "--tpm2-public-key-pcrs=11"}, append(args, file)...)...)
		cmd.Env = append(os.Environ(), append([]string{"PASSWORD=" + systemdSetupPassphrase}, env...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("systemd-cryptenroll: %v\n%s", err, out)
		}
		return settleDA(port)
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
}

// TestVMCryptenrollPIN: as TestVMCryptenrollSwtpmState, enrolled
// --tpm2-with-pin (signed PCR 11 policy, then the PIN): the boot asks
// "Enter TPM2 PIN for STATE" on the console, asks again after a wrong PIN,
// and opens STATE with slot 1 once the right one is typed; the PIN is
// never echoed.
func TestVMCryptenrollPIN(t *testing.T) {
	a := RequireInit(t)
	if a.PCRKey == "" {
		testenv.Missing(t, "the image build had no cryptctl pcr sign: the UKI carries no PCR 11 policy")
	}
	enroll, err := exec.LookPath("systemd-cryptenroll")
	if err != nil {
		t.Fatalf("systemd-cryptenroll not installed (apt-get install systemd): %v", err)
	}
	t.Parallel()
	n := NewNode(t, a, "cryptenroll-pin", TalosLayout())
	n.TPM = true
	useProbeRoot(t, n, nil)
	n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: []byte(systemdSetupConfig), Cmdline: fastFail})
	const pin = "4711 typed-pin"
	cryptenrollOnNode(t, a, n, enroll, "--tpm2-with-pin=yes", "NEWPIN="+pin)

	vm := n.Boot(BootOptions{Firmware: SecureBoot, Config: []byte(systemdConfig),
		Cmdline: fastFail + " cryptinit.prompt-timeout=120s"})
	vm.ExpectPrompt(`cryptinit: Enter TPM2 PIN for STATE \(try 1 of 3`)
	vm.Type("4711 wrong-pin\n")
	vm.ExpectPrompt(`cryptinit: Enter TPM2 PIN for STATE \(try 2 of 3`)
	vm.Type(pin + "\n")
	r := vm.RootReport()
	mustMarker(t, r, "/system/state", 1)
	mustSay(t, vm, `STATE: opened with slot 1 \(tpm`)
	if strings.Contains(vm.Console.Text(), "typed-pin") || strings.Contains(vm.Console.Text(), "wrong-pin") {
		t.Error("a typed PIN was echoed or logged on the console")
	}
}

// settleDA gives the swtpm the dictionary-attack limits of a real TPM (32
// tries; swtpm's default is 3) and shuts it down in order: a TPM counts an
// unorderly shutdown as a failed authorization, and with 3 tries the boot's
// PIN would have room for no mistake at all.
func settleDA(port int) error {
	conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(port)))
	if err != nil {
		return err
	}
	tr := tpm.NewStreamTransport(conn)
	defer tr.Close()
	// go-tpm has neither command: TPM2_DictionaryAttackLockReset and
	// TPM2_DictionaryAttackParameters on TPM_RH_LOCKOUT, empty password
	for _, c := range []struct {
		what   string
		cc     uint32
		params []uint32
	}{
		{"reset the swtpm's lockout counter", 0x139, nil},
		{"set the swtpm's lockout limits", 0x13A, []uint32{32, 600, 86400}},
	} {
		cmd := binary.BigEndian.AppendUint16(nil, 0x8002) // TPM_ST_SESSIONS
		cmd = binary.BigEndian.AppendUint32(cmd, 0)       // size, below
		cmd = binary.BigEndian.AppendUint32(cmd, c.cc)
		cmd = binary.BigEndian.AppendUint32(cmd, 0x4000000A) // TPM_RH_LOCKOUT
		cmd = binary.BigEndian.AppendUint32(cmd, 9)          // auth area: TPM_RS_PW, no nonce, no attributes, empty password
		cmd = append(binary.BigEndian.AppendUint32(cmd, 0x40000009), 0, 0, 0, 0, 0)
		for _, p := range c.params {
			cmd = binary.BigEndian.AppendUint32(cmd, p)
		}
		binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))
		rsp, err := tr.Send(cmd)
		if err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
		if len(rsp) < 10 || binary.BigEndian.Uint32(rsp[6:10]) != 0 {
			return fmt.Errorf("%s: response %x", c.what, rsp)
		}
	}
	if _, err := (tpm2.Shutdown{ShutdownType: tpm2.TPMSUClear}).Execute(tr); err != nil {
		return fmt.Errorf("shut the swtpm down: %w", err)
	}
	return nil
}
