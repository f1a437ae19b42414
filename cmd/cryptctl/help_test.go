package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// exampleLines returns the cryptctl command lines of an Examples section,
// as words, cut at the first shell operator (|, >, &&).
func exampleLines(t *testing.T, example string) [][]string {
	var out [][]string
	for _, l := range strings.Split(example, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "cryptctl") {
			continue
		}
		words, err := shellWords(l)
		if err != nil {
			t.Errorf("example %q: %v", l, err)
			continue
		}
		for i, w := range words {
			if w == "|" || w == ">" || w == "&&" || w == ";" {
				words = words[:i]
				break
			}
		}
		out = append(out, words)
	}
	return out
}

// shellWords splits a line as sh would for plain words and quotes (no
// expansion).
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, os.ErrInvalid
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// TestEveryCommandHasExamples: every command has an Examples section, and
// each example line parses as the command it names would parse it: the
// command exists, its flags exist there with valid values, the number of
// arguments fits and required flags are given.
func TestEveryCommandHasExamples(t *testing.T) {
	root := newRootCmd()
	paths := map[string]bool{}
	walkCommands(root, func(c *cobra.Command) {
		if c != root && !c.IsAvailableCommand() {
			return // hidden (__complete)
		}
		paths[c.CommandPath()] = true
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s has no Examples section: add one to examples (examples.go) or set Example", c.CommandPath())
			return
		}
		self := false
		for _, words := range exampleLines(t, c.Example) {
			fresh := newRootCmd()
			sub, rest, err := fresh.Find(words[1:])
			if err != nil {
				t.Errorf("%s example %q: %v", c.CommandPath(), strings.Join(words, " "), err)
				continue
			}
			if sub.CommandPath() == c.CommandPath() {
				self = true
			}
			line := strings.Join(words, " ")
			if err := sub.ParseFlags(rest); err != nil {
				t.Errorf("%s example %q: %v", c.CommandPath(), line, err)
				continue
			}
			sub.Flags().Visit(func(f *pflag.Flag) {
				if f.Hidden {
					t.Errorf("%s example %q uses the hidden (deprecated) --%s", c.CommandPath(), line, f.Name)
				}
			})
			for _, check := range []func() error{
				func() error { return sub.ValidateArgs(sub.Flags().Args()) },
				sub.ValidateRequiredFlags,
				sub.ValidateFlagGroups,
			} {
				if err := check(); err != nil {
					t.Errorf("%s example %q: %v", c.CommandPath(), line, err)
				}
			}
		}
		if c.Runnable() && !self {
			t.Errorf("%s: no example runs %s itself", c.CommandPath(), c.CommandPath())
		}
	})
	// an entry may be written ahead of a command merged from another
	// branch: it is shown nowhere until then
	for p := range examples {
		if !paths[p] {
			t.Logf("examples has %q, which is no command (yet)", p)
		}
	}
}

// complete asks cobra's __complete command, as the shell scripts do, and
// returns the suggestions and the directive line.
func complete(t *testing.T, args ...string) ([]string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(append([]string{"__complete"}, args...), bytes.NewReader(nil), &out, &errb); code != 0 {
		t.Fatalf("__complete %v: exit %d %s", args, code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[:len(lines)-1], lines[len(lines)-1]
}

func TestCompletion(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "machine.yaml")
	doc := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys: [{slot: 0, nodeID: {}}]\n---\nkind: UserVolumeConfig\nname: logs\nencryption:\n  keys: [{slot: 0, nodeID: {}}]\n"
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args    []string
		want    []string
		without []string
	}{
		{[]string{"volume", "open", "disk.img", "--volume", ""}, []string{"STATE", "EPHEMERAL"}, []string{"u-data"}},
		{[]string{"volume", "sync", "disk.img", "--config", cfg, "--volume", ""}, []string{"STATE", "EPHEMERAL", "u-data", "u-logs"}, nil},
		{[]string{"meta", "cancel-wipe", "--volume", ""}, []string{"STATE", "EPHEMERAL"}, nil},
		{[]string{"luks", "format", "disk.img", "--pbkdf", ""}, []string{"argon2id", "argon2i", "pbkdf2"}, nil},
		{[]string{"luks", "add-key", "disk.img", "--pbkdf", ""}, []string{"argon2id", "argon2i", "pbkdf2"}, nil},
		{[]string{"meta", "get", "--tag", ""}, []string{"9\tStateEncryptionConfig", "15\tUUIDOverride", "193\tcryptinit WipeRequest"}, nil},
		{[]string{"meta", "set", "--tag", ""}, []string{"9\tStateEncryptionConfig"}, nil},
	} {
		got, directive := complete(t, c.args...)
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("complete %v: %q missing from %q", c.args, w, got)
			}
		}
		for _, w := range c.without {
			if slices.Contains(got, w) {
				t.Errorf("complete %v: %q suggested without a config naming it", c.args, w)
			}
		}
		if directive != ":4" { // ShellCompDirectiveNoFileComp
			t.Errorf("complete %v: directive %s, want :4 (no file names)", c.args, directive)
		}
	}
	if got, directive := complete(t, "volume", "open", "disk.img", "--config", ""); !slices.Equal(got, []string{"yaml", "yml"}) || directive != ":8" {
		t.Errorf("--config completes %q %s, want YAML files (:8)", got, directive)
	}
}

// TestManPages: cryptctl man writes a page per visible command that groff
// reads without a warning, with the options and examples of the command.
func TestManPages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man1")
	out, err := cryptctl(t, "man", dir)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	root := newRootCmd()
	walkCommands(root, func(c *cobra.Command) {
		if c == root || c.IsAvailableCommand() {
			want++
			if _, err := os.Stat(filepath.Join(dir, strings.ReplaceAll(c.CommandPath(), " ", "-")+".1")); err != nil {
				t.Errorf("no page for %s: %v", c.CommandPath(), err)
			}
		}
	})
	files, _ := filepath.Glob(filepath.Join(dir, "*.1"))
	if len(files) != want || !strings.Contains(out, "wrote") {
		t.Errorf("%d pages written, want %d (%s)", len(files), want, out)
	}
	for _, f := range files {
		cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z", f)
		if msg, err := cmd.CombinedOutput(); err != nil || len(msg) > 0 {
			t.Errorf("groff %s: %v %s", filepath.Base(f), err, msg)
		}
	}
	txt, err := exec.Command("groff", "-man", "-Tutf8", "-P-cbou", filepath.Join(dir, "cryptctl-luks-remove-key.1")).Output()
	if err != nil {
		t.Fatal(err)
	}
	page := string(txt)
	for _, w := range []string{"NAME", "cryptctl-luks-remove-key", "SYNOPSIS", "-S, --key-slot", "EXAMPLES", "cryptctl luks remove-key disk.img -S 0", "EXIT STATUS", "no key opens", "SEE ALSO", "cryptctl-luks(1)"} {
		if !strings.Contains(page, w) {
			t.Errorf("remove-key page lacks %q:\n%s", w, page)
		}
	}
	if strings.Contains(page, "--slot") {
		t.Errorf("remove-key page shows the deprecated --slot:\n%s", page)
	}
}
