package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

func TestConfigValidateCmd(t *testing.T) {
	out, err := cryptctl(t, "config", "validate", "../../configs/tpm.yaml")
	if err != nil || !strings.Contains(out, "ok (2 volumes)") || !strings.Contains(out, "slot 31 (static, recovery)") {
		t.Fatalf("%v\n%s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys: [{slot: 40, nodeID: {}}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = cryptctl(t, "config", "validate", bad)
	if err == nil || exitCode(err) == 0 || !strings.Contains(err.Error(), "slot 40 is outside 0..31") {
		t.Fatalf("bad config: %v", err)
	}
}

func TestVolumeAndMetaCmds(t *testing.T) {
	img, metaImg := luks2test.NewImage(t, 20<<20), luks2test.NewImage(t, 1<<20)
	cfg := "../../configs/static-rotation-"
	if out, err := cryptctl(t, "volume", "format", "--config", cfg+"1.yaml", "--volume", "EPHEMERAL", img); err != nil || !strings.Contains(out, "formatted EPHEMERAL") {
		t.Fatalf("format: %v\n%s", err, out)
	}
	if _, err := cryptctl(t, "volume", "format", "--config", cfg+"1.yaml", "--volume", "EPHEMERAL", img); err == nil || !strings.Contains(err.Error(), "already holds a LUKS2 volume") {
		t.Fatalf("second format: %v", err)
	}
	if out, err := cryptctl(t, "volume", "sync", "--config", cfg+"2.yaml", "--volume", "EPHEMERAL", img); err != nil || !strings.Contains(out, "added [1]") {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	if out, err := cryptctl(t, "volume", "open", "--config", cfg+"3.yaml", "--volume", "EPHEMERAL", img); err != nil || !strings.Contains(out, "with slot 1") {
		t.Fatalf("open: %v\n%s", err, out)
	}

	if _, err := cryptctl(t, "meta", "set", "--init", "--tag", "15", "--value", "abc", metaImg); err != nil {
		t.Fatal(err)
	}
	if out, err := cryptctl(t, "meta", "get", "--tag", "15", metaImg); err != nil || out != "abc" {
		t.Fatalf("get: %v %q", err, out)
	}
	if out, err := cryptctl(t, "meta", "list", metaImg); err != nil || !strings.Contains(out, "UUIDOverride") {
		t.Fatalf("list: %v %q", err, out)
	}
	if _, err := cryptctl(t, "meta", "delete", "--tag", "15", metaImg); err != nil {
		t.Fatal(err)
	}
	if _, err := cryptctl(t, "meta", "get", "--tag", "15", metaImg); err == nil || exitCode(err) != exitFailure {
		t.Fatalf("deleted tag: %v", err)
	}
}

func TestVolumeStateFromMETA(t *testing.T) {
	img, metaImg := luks2test.NewImage(t, 20<<20), luks2test.NewImage(t, 1<<20)
	uuid := "8c4b2a34-7d2e-4c1f-9a55-3e0f6d21b9a7"
	out, err := cryptctl(t, "volume", "unlock", "--config", "../../configs/nodeid.yaml", "--volume", "STATE", img, "--meta", metaImg, "--node-uuid", uuid)
	if err != nil || !strings.Contains(out, "from the machine config") || !strings.Contains(out, "formatted STATE") {
		t.Fatalf("unlock: %v\n%s", err, out)
	}
	// no machine config: META tag 9, and tag 15 as the node UUID
	if _, err := cryptctl(t, "meta", "set", "--init", "--tag", "15", "--value", uuid, metaImg); err != nil {
		t.Fatal(err)
	}
	out, err = cryptctl(t, "volume", "open", "--volume", "STATE", img, "--meta", metaImg)
	if err != nil || !strings.Contains(out, "from the META") || !strings.Contains(out, "opened STATE") {
		t.Fatalf("open from META: %v\n%s", err, out)
	}
}

// TestVolumeTag9NeedsTrustMeta: STATE's config from META tag 9 (cleartext
// anyone holding the disk can write) only opens unless --trust-meta says
// the operator checked it; a config file the operator names may change
// key slots.
func TestVolumeTag9NeedsTrustMeta(t *testing.T) {
	img, metaImg := luks2test.NewImage(t, 20<<20), luks2test.NewImage(t, 1<<20)
	uuid := "8c4b2a34-7d2e-4c1f-9a55-3e0f6d21b9a7"
	// format STATE from the file (tag 9: nodeID slot 0), then add a static
	// slot 1 from another file
	if out, err := cryptctl(t, "volume", "format", "--config", "../../configs/nodeid.yaml", "--volume", "STATE", img, "--meta", metaImg, "--node-uuid", uuid); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	two := filepath.Join(t.TempDir(), "two.yaml")
	os.WriteFile(two, []byte("kind: VolumeConfig\nname: STATE\nencryption:\n  keys:\n    - {slot: 0, nodeID: {}}\n"+
		"    - {slot: 1, static: {passphrase: second}}\n  kdf: {type: pbkdf2, iterations: 1000}\n"), 0o600)
	if out, err := cryptctl(t, "volume", "sync", "--config", two, "--volume", "STATE", img, "--node-uuid", uuid); err != nil || !strings.Contains(out, "added [1]") {
		t.Fatalf("sync from a file: %v\n%s", err, out)
	}
	slots := func() []int {
		f, _ := os.Open(img)
		defer f.Close()
		h, err := luks2.ReadHeader(f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int
		for id := range h.Keyslots {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return ids
	}
	// tag 9 lists slot 0 only: without --trust-meta nothing changes
	sync := []string{"volume", "sync", "--volume", "STATE", img, "--meta", metaImg, "--node-uuid", uuid}
	out, err := cryptctl(t, sync...)
	if err == nil || !strings.Contains(out, "add --trust-meta") || !strings.Contains(out, "opened STATE") {
		t.Fatalf("sync from tag 9: %v\n%s", err, out)
	}
	if got := slots(); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("slots after a sync from tag 9 without --trust-meta: %v, want [0 1]\n%s", got, out)
	}
	if _, err := cryptctl(t, "volume", "format", "--volume", "STATE", luks2test.NewImage(t, 20<<20), "--meta", metaImg, "--node-uuid", uuid); err == nil || !strings.Contains(err.Error(), "not authenticated") {
		t.Fatalf("format from tag 9 without --trust-meta: %v", err)
	}
	// with --trust-meta the operator vouches for it: slot 1 goes
	if out, err := cryptctl(t, append(sync, "--trust-meta")...); err != nil || !strings.Contains(out, "removed [1]") {
		t.Fatalf("sync --trust-meta: %v\n%s", err, out)
	}
	if got := slots(); !slices.Equal(got, []int{0}) {
		t.Fatalf("slots after sync --trust-meta: %v, want [0]", got)
	}
}
