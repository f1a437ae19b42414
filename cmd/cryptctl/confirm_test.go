package main

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// answerTTY is a terminal on which the operator types answer (echoed, read
// as a line) at a confirmation prompt.
type answerTTY struct{ r *strings.Reader }

func newAnswerTTY(answer string) *answerTTY     { return &answerTTY{strings.NewReader(answer)} }
func (a *answerTTY) Read(p []byte) (int, error) { return a.r.Read(p) }
func (a *answerTTY) IsTerminal() bool           { return true }
func (a *answerTTY) ReadPassword() ([]byte, error) {
	l, err := readLine(a.r)
	return []byte(l), err
}

// remove-key without a --key-file that proves another slot opens asks, as
// luksKillSlot does: YES on a terminal removes, anything else or no
// terminal refuses and writes nothing, -q/--batch removes without asking.
func TestRemoveKeyConfirms(t *testing.T) {
	for _, c := range []struct {
		name    string
		stdin   io.Reader
		batch   []string
		removed bool
		want    string
	}{
		{name: "YES on a terminal", stdin: newAnswerTTY("YES\n"), removed: true, want: "Type 'yes' in capital letters"},
		{name: "yes in lower case", stdin: newAnswerTTY("yes\n"), want: "not confirmed"},
		{name: "Enter alone", stdin: newAnswerTTY("\n"), want: "not confirmed"},
		{name: "no terminal", stdin: strings.NewReader("YES\n"), want: "add -q/--batch"},
		{name: "-q", stdin: strings.NewReader(""), batch: []string{"-q"}, removed: true},
		{name: "--batch", stdin: strings.NewReader(""), batch: []string{"--batch"}, removed: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := luks2test.NewImage(t, 16<<20)
			k0, k1 := luks2test.KeyFile(t, []byte("zero")), luks2test.KeyFile(t, []byte("one"))
			if out, code := cryptctlIn(nil, append([]string{"luks", "format", img, "--key-file", k0}, cheapKDF...)...); code != 0 {
				t.Fatalf("format: %s", out)
			}
			if out, code := cryptctlIn(nil, append([]string{"luks", "add-key", img, "--key-file", k0, "--new-key-file", k1, "--key-slot", "1"}, cheapKDF...)...); code != 0 {
				t.Fatalf("add-key: %s", out)
			}
			out, code := cryptctlIn(c.stdin, append([]string{"luks", "remove-key", img, "--key-slot", "1"}, c.batch...)...)
			if (code == 0) != c.removed || !strings.Contains(out, c.want) {
				t.Errorf("exit %d, output %q; want removed=%v and %q", code, out, c.removed, c.want)
			}
			want := []int{0, 1}
			if c.removed {
				want = []int{0}
			}
			if got := csKeyslots(t, img); !slices.Equal(got, want) {
				t.Errorf("key slots %v, want %v", got, want)
			}
		})
	}
}
