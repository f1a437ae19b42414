package boot

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// costlyEphemeral formats the node's EPHEMERAL with slot 0 (p-zero) an
// argon2id of 8 MiB, and slot 1 (p-one) a cheap pbkdf2: with 6 MiB of
// memory slot 0 stands for a 2 GiB slot in a 1 GiB machine.
func costlyEphemeral(t *testing.T, n *node) {
	t.Helper()
	f, err := os.OpenFile(n.parts["EPHEMERAL"], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	h, err := luks2.Format(f, st.Size(), []byte("p-zero"), luks2.FormatOptions{KDF: luks2.KDF{Type: "argon2id", Time: 1, Memory: 8 << 10, Parallel: 1}})
	if err != nil {
		t.Fatal(err)
	}
	vk, _, err := h.Unlock(f, []byte("p-zero"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := luks2.AddKeyslot(f, vk, []byte("p-one"), 1, luks2.KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}); err != nil {
		t.Fatal(err)
	}
	// the fake mapping already holds a filesystem, as the real one would
	mapped := filepath.Join(n.dir, "luks2-EPHEMERAL")
	if err := os.WriteFile(mapped, []byte("XFSB"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(mapped, 2<<20); err != nil {
		t.Fatal(err)
	}
}

func ephemeralKeys(keys string) string {
	return volumeDoc("VolumeConfig", "STATE", "    - nodeID: {}\n      slot: 0\n") + "---\n" + volumeDoc("VolumeConfig", "EPHEMERAL", keys)
}

// TestBootSkipsCostlySlot: the boot gives the engine the machine's memory
// as the KDF limit: slot 0, which would need more, is skipped with a line
// naming it and both sizes, and slot 1 opens the volume.
func TestBootSkipsCostlySlot(t *testing.T) {
	n := newNode(t, standardParts())
	costlyEphemeral(t, n)
	b := n.boot(t.TempDir(), ephemeralKeys("    - static: {passphrase: p-zero}\n      slot: 0\n    - static: {passphrase: p-one}\n      slot: 1\n"), "")
	b.MemAvailable = 6 << 20
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, n.con.String())
	}
	con := n.con.String()
	for _, want := range []string{
		"EPHEMERAL: opened with slot 1 (static)",
		"EPHEMERAL:   slot 0 (static): keyslot 0: argon2id needs 8 MiB of memory, 6 MiB available",
	} {
		if !strings.Contains(con, want) {
			t.Errorf("console lacks %q:\n%s", want, con)
		}
	}
}

// TestPromptSkipsCostlySlot: a passphrase typed at the console is not tried
// on a slot the machine cannot afford (the console says so once); the one
// for the affordable slot opens the volume.
func TestPromptSkipsCostlySlot(t *testing.T) {
	n := newNode(t, standardParts())
	costlyEphemeral(t, n)
	b := n.boot(t.TempDir(), ephemeralKeys("    - static: {passphrase: nobody-knows}\n      slot: 2\n"), "")
	b.MemAvailable = 6 << 20
	p := &fakePrompt{answers: []string{"p-zero", "p-one"}}
	b.Prompt = p
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, n.con.String())
	}
	con := n.con.String()
	if p.asked != 2 || !strings.Contains(con, "EPHEMERAL: opened with slot 1 (console passphrase)") {
		t.Errorf("asked %d times; console:\n%s", p.asked, con)
	}
	if strings.Count(con, "EPHEMERAL: a typed passphrase is not tried on keyslot 0: argon2id needs 8 MiB of memory, 6 MiB available") != 1 {
		t.Errorf("console does not say once that slot 0 is skipped:\n%s", con)
	}
}
