package readmetest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// session is one marked shell block of a README.
type session struct {
	name, script string
	line         int // of the marker
}

const marker = "<!-- session: "

// parseSessions returns the marked sessions of a README. A marker not
// followed (after blank lines) by a ```sh block, an unterminated block or
// two sessions of the same name are errors.
func parseSessions(readme string) ([]session, error) {
	var out []session
	seen := map[string]bool{}
	lines := strings.Split(readme, "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, marker) {
			continue
		}
		name := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(l, marker), "-->"))
		if name == "" || !strings.HasSuffix(l, "-->") || strings.ContainsAny(name, " /") {
			return nil, fmt.Errorf("line %d: marker %q: write <!-- session: NAME --> with a one-word NAME", i+1, l)
		}
		if seen[name] {
			return nil, fmt.Errorf("line %d: a second session %q", i+1, name)
		}
		seen[name] = true
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j == len(lines) || strings.TrimSpace(lines[j]) != "```sh" {
			return nil, fmt.Errorf("line %d: session %s is not followed by a ```sh block", i+1, name)
		}
		var body []string
		k := j + 1
		for ; k < len(lines) && strings.TrimSpace(lines[k]) != "```"; k++ {
			body = append(body, lines[k])
		}
		if k == len(lines) {
			return nil, fmt.Errorf("line %d: session %s: the ```sh block never ends", i+1, name)
		}
		out = append(out, session{name: name, script: strings.Join(body, "\n") + "\n", line: i + 1})
		i = k
	}
	return out, nil
}

// runSession runs s in dir with PATH starting with bin and returns the
// trace (bash -x) and output.
func runSession(ctx context.Context, s session, dir, bin string) (string, error) {
	script := filepath.Join(dir, ".session.sh")
	if err := os.WriteFile(script, []byte(s.script), 0o600); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "bash", "-e", "-u", "-o", "pipefail", "-x", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "HOME="+dir)
	cmd.Stdin = nil // sessions never wait for a terminal
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestREADMESessions runs every marked session of the top-level README.
func TestREADMESessions(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	sessions, err := parseSessions(string(readme))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	if len(sessions) == 0 {
		t.Fatal("README.md has no <!-- session: NAME --> block")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(os.PathSeparator),
		"-ldflags", "-X github.com/cryptinit/cryptinit/internal/version.Version=readme-session", "./cmd/...")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}
	// what the README says of the built tools themselves
	for _, c := range [][]string{{"cryptctl", "version"}, {"kms-server", "version"}, {"kms-server", "-h"}} {
		out, err := exec.Command(filepath.Join(bin, c[0]), c[1:]...).CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v (want exit 0)\n%s", strings.Join(c, " "), err, out)
		}
		want := "version readme-session, commit "
		if c[1] == "-h" {
			want = "kms-server rotate"
		}
		if !strings.Contains(string(out), want) {
			t.Errorf("%s printed %q, want %q", strings.Join(c, " "), out, want)
		}
	}
	for _, s := range sessions {
		t.Run(s.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			out, err := runSession(ctx, s, t.TempDir(), bin)
			if err != nil {
				t.Errorf("README.md line %d, session %s: %v\n%s", s.line, s.name, err, indent(out))
			}
		})
	}
}

// TestSessionRunnerFails: a session in which a command fails fails, also
// mid-pipe, and a marker without its block is an error.
func TestSessionRunnerFails(t *testing.T) {
	for _, c := range []struct {
		script string
		ok     bool
	}{
		{"true\necho fine\n", true},
		{"true\nfalse\necho never\n", false},
		{"false | cat\n", false},
		{"echo $UNSET_VARIABLE_IN_SESSION\n", false},
		{"false || test $? -eq 1\n", true},
	} {
		readme := "# x\n\n<!-- session: t -->\n```sh\n" + c.script + "```\n"
		ss, err := parseSessions(readme)
		if err != nil || len(ss) != 1 || ss[0].script != c.script {
			t.Fatalf("parse %q: %v %+v", readme, err, ss)
		}
		_, err = runSession(context.Background(), ss[0], t.TempDir(), t.TempDir())
		if (err == nil) != c.ok {
			t.Errorf("%q: err %v, want ok %v", c.script, err, c.ok)
		}
	}
	for _, bad := range []string{
		"<!-- session: a -->\ntext\n```sh\ntrue\n```\n",
		"<!-- session: a -->\n```sh\ntrue\n",
		"<!-- session: -->\n```sh\ntrue\n```\n",
		"<!-- session: a -->\n```sh\ntrue\n```\n<!-- session: a -->\n```sh\ntrue\n```\n",
	} {
		if _, err := parseSessions(bad); err == nil {
			t.Errorf("parsed %q without an error", bad)
		}
	}
}

func indent(s string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		b.WriteString("    " + sc.Text() + "\n")
	}
	return b.String()
}
