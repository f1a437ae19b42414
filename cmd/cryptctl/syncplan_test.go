package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// ephemeralConfig writes a config for EPHEMERAL with static keys, one per
// slot: passphrases[slot].
func ephemeralConfig(t *testing.T, passphrases map[int]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: v1alpha1\nkind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  provider: luks2\n  keys:\n")
	for slot := 0; slot < 32; slot++ {
		if p, ok := passphrases[slot]; ok {
			b.WriteString("    - static:\n        passphrase: " + p + "\n      slot: " + string(rune('0'+slot)) + "\n")
		}
	}
	b.WriteString("  kdf: {type: argon2id, memoryKiB: 16384, iterations: 2, parallelism: 1}\n")
	path := filepath.Join(t.TempDir(), "cfg.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// volume sync --dry-run prints what sync would add, re-key and remove, and
// why, and leaves the image byte for byte as it was; volume open prints
// what it can see sync would change without asking any other key.
func TestVolumeSyncDryRun(t *testing.T) {
	img := luks2test.NewImage(t, 20<<20)
	dev := []string{"--volume", "EPHEMERAL", img}
	if out, err := cryptctl(t, append([]string{"volume", "format", "--config", ephemeralConfig(t, map[int]string{0: "oldkey"})}, dev...)...); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	// a slot the config does not name
	if out, code := cryptctlIn(nil, append([]string{"luks", "add-key", img, "--key-file", luks2test.KeyFile(t, []byte("oldkey")),
		"--new-key-file", luks2test.KeyFile(t, []byte("stray")), "--key-slot", "5"}, cheapKDF...)...); code != 0 {
		t.Fatalf("add-key: %s", out)
	}
	both := ephemeralConfig(t, map[int]string{0: "oldkey", 1: "newkey"})
	changed := ephemeralConfig(t, map[int]string{0: "oldkey", 1: "otherkey"})

	steps := []struct {
		name    string
		args    []string
		want    []string
		notWant []string
		writes  bool
	}{
		{name: "dry run: add and remove", args: []string{"sync", "--dry-run", "--config", both}, want: []string{
			"dry run: EPHEMERAL unchanged (nothing was written)",
			"add slot 1 (static): configured, and the slot is empty",
			"remove slot 5: the config does not name it"}, notWant: []string{"keyslots:"}},
		{name: "open shows the same", args: []string{"open", "--config", both}, want: []string{
			"sync would: add slot 1 (static): configured, and the slot is empty",
			"sync would: remove slot 5: the config does not name it"}},
		{name: "sync", args: []string{"sync", "--config", both}, want: []string{"added [1]", "removed [5]"}, writes: true},
		{name: "dry run: in sync", args: []string{"sync", "--dry-run", "--config", both}, want: []string{"a sync would:\n  nothing: in sync"}},
		{name: "open: in sync as far as the header shows", args: []string{"open", "--config", both}, want: []string{
			"sync would: check slots [1], which open did not try"}, notWant: []string{"add slot", "remove slot"}},
		{name: "dry run: re-key", args: []string{"sync", "--dry-run", "--config", changed}, want: []string{
			"re-key slot 1 (static): its configured key no longer opens it"}, notWant: []string{"add slot", "remove slot"}},
		{name: "open: slot not tried", args: []string{"open", "--config", changed}, want: []string{
			"sync would: check slots [1], which open did not try"}},
	}
	for _, s := range steps {
		before, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		out, err := cryptctl(t, append(append([]string{"volume"}, s.args...), dev...)...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", s.name, err, out)
		}
		for _, w := range s.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", s.name, w, out)
			}
		}
		for _, w := range s.notWant {
			if strings.Contains(out, w) {
				t.Errorf("%s: output has %q:\n%s", s.name, w, out)
			}
		}
		after, _ := os.ReadFile(img)
		if changed := !bytes.Equal(before, after); changed != s.writes {
			t.Errorf("%s: image changed %v, want %v", s.name, changed, s.writes)
		}
	}
	if got := csKeyslots(t, img); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Errorf("key slots %v after the one real sync, want [0 1]", got)
	}

	// a volume exactly as its config says
	one, cfg := luks2test.NewImage(t, 20<<20), ephemeralConfig(t, map[int]string{0: "oldkey"})
	if out, err := cryptctl(t, "volume", "format", "--config", cfg, "--volume", "EPHEMERAL", one); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	if out, err := cryptctl(t, "volume", "open", "--config", cfg, "--volume", "EPHEMERAL", one); err != nil || !strings.Contains(out, "sync would change nothing") {
		t.Errorf("open of a volume in sync: %v\n%s", err, out)
	}
}

// The dry-run overlay reads what was written to it, across block
// boundaries, and never writes to the device under it.
func TestOverlay(t *testing.T) {
	base := bytes.Repeat([]byte{0xAA}, 3*overlayBlock)
	o := newOverlay(bytes.NewReader(base), int64(len(base)))
	for _, w := range []struct {
		off  int64
		data []byte
	}{
		{10, []byte("hello")},
		{overlayBlock - 2, []byte("span")},
		{2*overlayBlock + 100, bytes.Repeat([]byte{1}, 50)},
	} {
		if _, err := o.WriteAt(w.data, w.off); err != nil {
			t.Fatal(err)
		}
	}
	want := bytes.Clone(base)
	copy(want[10:], "hello")
	copy(want[overlayBlock-2:], "span")
	copy(want[2*overlayBlock+100:], bytes.Repeat([]byte{1}, 50))
	got := make([]byte, len(base))
	if n, err := o.ReadAt(got, 0); n != len(got) || err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, %v; content equal %v", n, err, bytes.Equal(got, want))
	}
	if !bytes.Equal(base, bytes.Repeat([]byte{0xAA}, 3*overlayBlock)) {
		t.Fatal("the base was written")
	}
	if n, err := o.ReadAt(make([]byte, 10), int64(len(base))-4); n != 4 || err == nil {
		t.Errorf("read past the end: %d, %v", n, err)
	}
	if _, err := o.WriteAt([]byte("x"), int64(len(base))); err == nil {
		t.Error("write past the end accepted")
	}
}

// volume open says which configured slot it could not check (here: a
// lockToSTATE key without --state-dir) and that sync leaves it.
func TestVolumeOpenUncheckedSlot(t *testing.T) {
	img := luks2test.NewImage(t, 20<<20)
	if out, err := cryptctl(t, "volume", "format", "--config", ephemeralConfig(t, map[int]string{1: "newkey"}), "--volume", "EPHEMERAL", img); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	if out, code := cryptctlIn(nil, append([]string{"luks", "add-key", img, "--key-file", luks2test.KeyFile(t, []byte("newkey")),
		"--new-key-file", luks2test.KeyFile(t, []byte("locked")), "--key-slot", "0"}, cheapKDF...)...); code != 0 {
		t.Fatalf("add-key: %s", out)
	}
	cfg := filepath.Join(t.TempDir(), "locked.yaml")
	os.WriteFile(cfg, []byte(`apiVersion: v1alpha1
kind: VolumeConfig
name: EPHEMERAL
encryption:
  keys:
    - static: {passphrase: locked}
      slot: 0
      lockToSTATE: true
    - static: {passphrase: newkey}
      slot: 1
  kdf: {type: argon2id, memoryKiB: 16384, iterations: 2, parallelism: 1}
`), 0o600)
	out, err := cryptctl(t, "volume", "open", "--config", cfg, "--volume", "EPHEMERAL", img)
	if err != nil || !strings.Contains(out, "with slot 1") ||
		!strings.Contains(out, "sync would: leave slot 0 (static) as it is: its key cannot be checked now") {
		t.Fatalf("%v\n%s", err, out)
	}
}

// A dry run of STATE with --meta leaves META as it was and says that a
// sync would update tag 9 to match the machine config.
func TestVolumeSyncDryRunMETA(t *testing.T) {
	const uuid = "8c4b2a34-7d2e-4c1f-9a55-3e0f6d21b9a7"
	img, metaImg := luks2test.NewImage(t, 20<<20), luks2test.NewImage(t, 1<<20)
	cfg := "../../configs/nodeid.yaml"
	if out, err := cryptctl(t, "volume", "format", "--config", cfg, "--volume", "STATE", img, "--node-uuid", uuid); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	before, _ := os.ReadFile(metaImg)
	out, err := cryptctl(t, "volume", "sync", "--dry-run", "--config", cfg, "--volume", "STATE", img, "--node-uuid", uuid, "--meta", metaImg)
	if err != nil || !strings.Contains(out, "a sync would update META tag 9") || !strings.Contains(out, "nothing: in sync") {
		t.Fatalf("%v\n%s", err, out)
	}
	if after, _ := os.ReadFile(metaImg); !bytes.Equal(before, after) {
		t.Error("the dry run wrote META")
	}
	if out, err := cryptctl(t, "volume", "sync", "--config", cfg, "--volume", "STATE", img, "--node-uuid", uuid, "--meta", metaImg); err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	if out, err := cryptctl(t, "volume", "sync", "--dry-run", "--config", cfg, "--volume", "STATE", img, "--node-uuid", uuid, "--meta", metaImg); err != nil || strings.Contains(out, "update META tag 9") {
		t.Errorf("after a sync, tag 9 still to update: %v\n%s", err, out)
	}
}

// A slot another tool enrolled (here a clevis token names it) is kept by
// sync, and both the dry-run plan and open's preview say so instead of
// planning its removal.
func TestSyncPlanKeepsForeignSlot(t *testing.T) {
	img := luks2test.NewImage(t, 20<<20)
	cfg := ephemeralConfig(t, map[int]string{0: "oldkey"})
	if out, err := cryptctl(t, "volume", "format", "--config", cfg, "--volume", "EPHEMERAL", img); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	if out, code := cryptctlIn(nil, append([]string{"luks", "add-key", img, "--key-file", luks2test.KeyFile(t, []byte("oldkey")),
		"--new-key-file", luks2test.KeyFile(t, []byte("clevis secret")), "--key-slot", "5"}, cheapKDF...)...); code != 0 {
		t.Fatalf("add-key: %s", out)
	}
	tang := `{"type":"clevis","keyslots":["5"],"jwe":{"protected":"eyJhbGciOiJFQ0RILUVTIiwiY2xldmlzIjp7InBpbiI6InRhbmcifX0","iv":"AA","ciphertext":"AA","tag":"AA"}}`
	luks2test.MustCryptsetup(t, []byte(tang), "token", "import", "--token-id", "1", img)
	before, _ := os.ReadFile(img)
	for _, c := range []struct{ op, want string }{
		{"sync --dry-run", "keep slot 5 as it is:"},
		{"open", "sync would: keep slot 5 as it is: a clevis token"},
	} {
		out, err := cryptctl(t, append(append([]string{"volume"}, strings.Fields(c.op)...), "--config", cfg, "--volume", "EPHEMERAL", img)...)
		if err != nil || !strings.Contains(out, c.want) || strings.Contains(out, "remove slot 5") {
			t.Errorf("%s: %v; want %q and no removal of slot 5:\n%s", c.op, err, c.want, out)
		}
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Error("dry run or open wrote to the image")
	}
}
