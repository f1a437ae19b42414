package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// --node-uuid is checked at the door and kept as typed; a nodeID key that
// does not open names the source of its UUID, never the UUID (the nodeID
// passphrase) itself nor any hash of it.
func TestVolumeNodeUUID(t *testing.T) {
	const made = "8c4b2a34-7d2e-4c1f-9a55-3e0f6d21b9a7"
	img, metaImg := luks2test.NewImage(t, 20<<20), luks2test.NewImage(t, 1<<20)
	cfg := "../../configs/nodeid.yaml"
	if out, err := cryptctl(t, "volume", "format", "--config", cfg, "--volume", "STATE", img, "--node-uuid", made); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	other := "0f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"
	if _, err := cryptctl(t, "meta", "set", "--init", "--tag", "15", "--value", other, metaImg); err != nil {
		t.Fatal(err)
	}
	hashes := func(u string) []string {
		s := sha256.Sum256([]byte(u))
		return []string{u, fmt.Sprintf("%x", s[:3]), fmt.Sprintf("%x", s[len(s)-3:])}
	}
	for _, c := range []struct {
		name      string
		args      []string
		wantErr   []string
		opens     bool
		notInErrs []string
	}{
		{name: "as made", args: []string{"--node-uuid", made}, opens: true},
		{name: "upper case, as dmidecode prints it", args: []string{"--node-uuid", strings.ToUpper(made)}, opens: true},
		{name: "not a UUID", args: []string{"--node-uuid", "node-1"}, wantErr: []string{"--node-uuid: not a UUID"}},
		{name: "no hyphens", args: []string{"--node-uuid", strings.ReplaceAll(made, "-", "")}, wantErr: []string{"--node-uuid: not a UUID"}},
		{name: "another UUID from the flag", args: []string{"--node-uuid", other},
			wantErr: []string{"from --node-uuid"}, notInErrs: hashes(other)},
		{name: "another UUID from META tag 15", args: []string{"--meta", metaImg},
			wantErr: []string{"from META tag 15"}, notInErrs: hashes(other)},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"volume", "open", "--config", cfg, "--volume", "STATE", img}, c.args...)
			out, err := cryptctl(t, args...)
			if c.opens {
				if err != nil || !strings.Contains(out, "opened STATE") {
					t.Fatalf("%v\n%s", err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("opened with %v", c.args)
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			for _, n := range c.notInErrs {
				if strings.Contains(err.Error()+out, n) {
					t.Errorf("the node UUID (the nodeID passphrase) or a hash of it (%s) is printed: %v\n%s", n, err, out)
				}
			}
		})
	}
}

// A volume made from an upper-case META tag 15 UUID (used verbatim, as the
// boot does) opens with --meta; --node-uuid, lower-cased as the boot reads
// SMBIOS, is another passphrase, and the error says to use --meta.
func TestVolumeNodeUUIDTag15AsWritten(t *testing.T) {
	const upper = "8C4B2A34-7D2E-4C1F-9A55-3E0F6D21B9A7"
	img, metaImg := luks2test.NewImage(t, 20<<20), luks2test.NewImage(t, 1<<20)
	cfg := "../../configs/nodeid.yaml"
	if _, err := cryptctl(t, "meta", "set", "--init", "--tag", "15", "--value", upper, metaImg); err != nil {
		t.Fatal(err)
	}
	if out, err := cryptctl(t, "volume", "format", "--config", cfg, "--volume", "STATE", img, "--meta", metaImg); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	if out, err := cryptctl(t, "volume", "open", "--config", cfg, "--volume", "STATE", img, "--meta", metaImg); err != nil || !strings.Contains(out, "opened STATE") {
		t.Fatalf("open with --meta: %v\n%s", err, out)
	}
	_, err := cryptctl(t, "volume", "open", "--config", cfg, "--volume", "STATE", img, "--node-uuid", upper)
	if err == nil || !strings.Contains(err.Error(), "--meta META when it came from META tag 15") {
		t.Fatalf("open with --node-uuid %s: %v; want a hint to use --meta", upper, err)
	}
}

// lockToSTATE without a salt says what to pass; cryptctl volume salt makes
// one as Talos does (encryption-salt.yaml, 0600, 32 bytes) and keeps an
// existing one; with it a lockToSTATE volume formats and opens.
func TestVolumeSalt(t *testing.T) {
	const uuid = "8c4b2a34-7d2e-4c1f-9a55-3e0f6d21b9a7"
	img, dir := luks2test.NewImage(t, 20<<20), t.TempDir()
	vol := []string{"--config", "../../configs/nodeid.yaml", "--volume", "EPHEMERAL", img, "--node-uuid", uuid}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{name: "no --state-dir", want: "pass --state-dir DIR"},
		{name: "no salt in --state-dir", args: []string{"--state-dir", dir}, want: "cryptctl volume salt --state-dir " + dir},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := cryptctl(t, append(append([]string{"volume", "format"}, vol...), c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want one with %q", err, c.want)
			}
		})
	}
	if _, err := cryptctl(t, "volume", "salt"); err == nil || !strings.Contains(err.Error(), "--state-dir is required") {
		t.Errorf("salt without --state-dir: %v", err)
	}
	if _, err := cryptctl(t, "volume", "salt", "--state-dir", filepath.Join(dir, "missing")); err == nil {
		t.Error("salt in a missing dir succeeded")
	}
	out, err := cryptctl(t, "volume", "salt", "--state-dir", dir)
	if err != nil || !strings.Contains(out, "created") {
		t.Fatalf("salt: %v %s", err, out)
	}
	path := filepath.Join(dir, keys.SaltFile)
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("salt file %v mode %v", err, st.Mode())
	}
	first, _ := os.ReadFile(path)
	if !bytes.HasPrefix(first, []byte("diskSalt:\n")) {
		t.Errorf("salt file is not Talos's shape:\n%s", first)
	}
	if salt, err := keys.ReadSalt(dir); err != nil || len(salt) != keys.SaltSize || bytes.Equal(salt, make([]byte, keys.SaltSize)) {
		t.Fatalf("salt %x, %v", salt, err)
	}
	if out, err := cryptctl(t, "volume", "salt", "--state-dir", dir); err != nil || !strings.Contains(out, "kept") {
		t.Fatalf("second salt: %v %s", err, out)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(first, again) {
		t.Fatal("an existing salt was replaced")
	}
	if out, err := cryptctl(t, append(append([]string{"volume", "format"}, vol...), "--state-dir", dir)...); err != nil {
		t.Fatalf("format with the salt: %v\n%s", err, out)
	}
	if out, err := cryptctl(t, append(append([]string{"volume", "open"}, vol...), "--state-dir", dir)...); err != nil || !strings.Contains(out, "opened EPHEMERAL") {
		t.Fatalf("open with the salt: %v\n%s", err, out)
	}
}
