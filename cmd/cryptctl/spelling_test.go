package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// TestOneSpelling: --key-slot/-S names a slot everywhere, the device is the
// positional argument in every group, and the old spellings still work with
// a one-line note on stderr.
func TestOneSpelling(t *testing.T) {
	img := luks2test.NewImage(t, 20<<20)
	k0 := luks2test.KeyFile(t, []byte("zero"))
	k1 := luks2test.KeyFile(t, []byte("one"))
	cheap := []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}

	// Types and ciphers we cannot write are refused before anything is written.
	for _, c := range []struct{ flag, val, want string }{
		{"--type", "luks1", "writes only luks2"},
		{"--cipher", "aes-cbc-essiv:sha256", "writes only aes-xts-plain64"},
		{"--cipher", "serpent-xts-plain64", "writes only aes-xts-plain64"},
	} {
		_, errs, code := luks(t, nil, append([]string{"format", img, "--key-file", k0, c.flag, c.val}, cheap...)...)
		if code != 1 || !strings.Contains(errs, c.want) || !strings.Contains(errs, "nothing was written") {
			t.Errorf("format %s %s: exit %d, stderr %q; want exit 1 and %q", c.flag, c.val, code, errs, c.want)
		}
	}
	if _, err := luks2.ReadHeader(mustOpen(t, img)); err == nil {
		t.Fatal("a refused format wrote a header")
	}

	mustLuks(t, nil, append([]string{"format", img, "--type", "luks2", "--cipher", "aes-xts-plain64", "--key-file", k0, "-S", "3"}, cheap...)...)
	mustLuks(t, nil, append([]string{"add-key", img, "--key-file", k0, "--new-key-file", k1, "-S", "5"}, cheap...)...)
	for _, c := range []struct {
		args     []string
		code     int
		stderrIn string // a substring stderr must hold; "" = stderr must be empty
	}{
		{[]string{"test-key", img, "--key-file", k0, "-S", "3"}, 0, ""},
		{[]string{"test-key", img, "--key-file", k0, "--key-slot", "5"}, 2, "slot 5"},
		{[]string{"test-key", img, "--key-file", k1, "--slot", "5"}, 0, "--slot is deprecated and goes in the next release: use --key-slot"},
	} {
		_, errs, code := luks(t, nil, c.args...)
		if code != c.code || (c.stderrIn == "" && errs != "") || !strings.Contains(errs, c.stderrIn) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d, stderr with %q", c.args, code, errs, c.code, c.stderrIn)
		}
	}
	// The note is one line.
	if _, errs, _ := luks(t, nil, "test-key", img, "--key-file", k1, "--slot", "5"); strings.Count(errs, "\n") != 1 {
		t.Errorf("deprecation note is not one line: %q", errs)
	}
	// remove-key takes the slot in either spelling and requires one.
	if _, errs, code := luks(t, nil, "remove-key", img); code != 1 || !strings.Contains(errs, "--key-slot is required") {
		t.Errorf("remove-key without a slot: exit %d %q", code, errs)
	}
	_, errs, code := luks(t, nil, "remove-key", img, "--slot", "5", "--key-file", k0)
	if code != 0 || !strings.Contains(errs, "deprecated") {
		t.Fatalf("remove-key --slot: exit %d %q", code, errs)
	}
	if _, _, code := luks(t, nil, "test-key", img, "--key-file", k1); code != 2 {
		t.Errorf("slot 5 still opens after remove-key --slot 5 (exit %d)", code)
	}
	if _, errs, code := luks(t, []byte("zero"), "remove-key", img, "-S", "3", "--key-file", "-"); code != 2 {
		t.Errorf("remove-key -S 3 of the last slot: exit %d %q", code, errs)
	}

	// volume: the device is the argument; --device still works, with a note.
	vimg := luks2test.NewImage(t, 20<<20)
	cfg := "../../configs/static-rotation-1.yaml"
	var out, errb bytes.Buffer
	if code := run([]string{"volume", "format", vimg, "--config", cfg, "--volume", "EPHEMERAL"}, nil, &out, &errb); code != 0 {
		t.Fatalf("volume format DEVICE: exit %d %s", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"volume", "open", "--device", vimg, "--config", cfg, "--volume", "EPHEMERAL"}, nil, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "opened EPHEMERAL") || !strings.Contains(errb.String(), "--device is deprecated") {
		t.Errorf("volume open --device: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if _, err := cryptctl(t, "volume", "open", vimg, "--device", img, "--config", cfg, "--volume", "EPHEMERAL"); err == nil || !strings.Contains(err.Error(), "two devices named") {
		t.Errorf("two different devices: %v", err)
	}
	if _, err := cryptctl(t, "volume", "open", "--config", cfg, "--volume", "EPHEMERAL"); err == nil || !strings.Contains(err.Error(), "name the device") {
		t.Errorf("no device: %v", err)
	}
}

// TestSlotFlagSpelling walks the command tree: a flag that names a key slot
// is --key-slot with -S, and no visible flag uses another spelling.
func TestSlotFlagSpelling(t *testing.T) {
	n := 0
	walkCommands(newRootCmd(), func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			switch {
			case f.Name == "key-slot":
				n++
				if f.Shorthand != "S" {
					t.Errorf("%s --key-slot has shorthand %q, want S", c.CommandPath(), f.Shorthand)
				}
			case f.Name == "slot" || f.Name == "device":
				if !f.Hidden {
					t.Errorf("%s: old spelling --%s is visible", c.CommandPath(), f.Name)
				}
			case strings.Contains(f.Name, "slot") && !f.Hidden:
				t.Errorf("%s --%s: a key slot is --key-slot", c.CommandPath(), f.Name)
			}
		})
	})
	if n < 5 {
		t.Errorf("%d commands have --key-slot, want at least 5 (format, add-key, change-key, remove-key, test-key)", n)
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
