package vm

import (
	"bytes"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/meta"
)

// metaTags reads the META partition of the node's first disk.
func metaTags(t *testing.T, n *Node) *meta.Meta {
	t.Helper()
	buf := make([]byte, meta.Size)
	if err := n.Disks[0].ReadAt("META", buf, 0); err != nil {
		t.Fatal(err)
	}
	m, err := meta.Read(bytes.NewReader(buf))
	if err != nil {
		t.Fatalf("META: %v", err)
	}
	return m
}

// TestVMUserMetaTags is issue 10 defect 2 on a real boot: tags 12-14 belong
// to Talos's users. A node whose tag 12 holds "STATE" (where cryptinit once
// kept its wipe request) and tag 13 "EPHEMERAL" (its old format journal)
// boots with STATE and EPHEMERAL as they were (their markers survive),
// says once that it ignores them, and leaves every tag it does not own
// (here: all of them, tag 9 included, as the config did not change) with
// the value it had.
func TestVMUserMetaTags(t *testing.T) {
	a := RequireInit(t)
	if a.Cryptctl == "" {
		t.Fatal("out/bin/cryptctl is missing: the image build could not build ./cmd/cryptctl")
	}
	t.Parallel()
	n := NewNode(t, a, "usertags", TalosLayout())
	cfg := TestConfig(t, "basic.yaml")
	_, r := n.BootToRoot(BootOptions{Config: cfg, Cmdline: fastFail})
	mustStateAndEphemeral(t, r, 0)

	users := map[uint32]string{12: "STATE\n", 13: "EPHEMERAL\n", 14: "u-data\n", 16: "talos-machine-token", 200: "odd tag"}
	err := n.Disks[0].EditPartition("META", func(file string) error {
		for tag, v := range users {
			out, err := exec.Command(a.Cryptctl, "meta", "set", "--init", "--tag", fmt.Sprint(tag), "--value", v, file).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	before := metaTags(t, n)

	vm, r := n.BootToRoot(BootOptions{Config: cfg, Cmdline: fastFail})
	mustStateAndEphemeral(t, r, 1) // STATE and EPHEMERAL kept their data
	out := vm.Console.Text()
	if strings.Contains(out, "meta: wiped") {
		t.Errorf("a user's tag wiped a volume:\n%s", out)
	}
	for _, w := range []string{`META tag 12 holds "STATE"`, `META tag 13 holds "EPHEMERAL"`} {
		if c := strings.Count(out, w); c != 1 {
			t.Errorf("%q said %d times, want once", w, c)
		}
	}

	after := metaTags(t, n)
	var tb, ta []string
	for _, tag := range before.Tags() {
		tb = append(tb, fmt.Sprint(tag))
		v, _ := before.Get(tag)
		if w, ok := after.Get(tag); !ok || !bytes.Equal(v, w) {
			t.Errorf("tag %d: %q before the boot, %q (set %v) after", tag, v, w, ok)
		}
	}
	for _, tag := range after.Tags() {
		ta = append(ta, fmt.Sprint(tag))
	}
	sort.Strings(tb)
	sort.Strings(ta)
	if strings.Join(tb, " ") != strings.Join(ta, " ") {
		t.Errorf("tags %v before the boot, %v after", tb, ta)
	}
	for tag, v := range users {
		if w, _ := after.Get(tag); string(w) != v {
			t.Errorf("user tag %d = %q, want %q", tag, w, v)
		}
	}
}
