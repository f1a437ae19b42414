package readmetest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
// followed (after blank lines) by a ```sh block, an unterminated block, two
// sessions of the same name and a line starting with "! " (a check that
// bash -e never acts on) are errors.
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
			if strings.HasPrefix(strings.TrimSpace(lines[k]), "! ") {
				return nil, fmt.Errorf("line %d: session %s: bash -e ignores the status of a command inverted with !, so it can never fail the session; write: code=0; CMD || code=$?; test $code -eq N", k+1, name)
			}
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
	// a session that ends (or is killed at its time limit) while a process
	// it started still holds the output pipe would keep the wait open
	// forever: give up after 10 s (an error; the process is a leftover)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// leftovers returns the processes, other than this one, that still run in
// dir or name a path in it on their command line: what a session started
// (kms-server in the background, swtpm --daemon in /) and did not stop.
func leftovers(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		args, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if cwd == dir || strings.HasPrefix(cwd, dir+"/") || strings.Contains(string(args), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopLeftovers waits up to grace for the processes a session left in dir
// to end (a trap's kill takes a moment), then kills those that remain and
// returns their command lines.
func stopLeftovers(dir string, grace time.Duration) []string {
	deadline := time.Now().Add(grace)
	for len(leftovers(dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	var left []string
	for _, pid := range leftovers(dir) {
		args, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		left = append(left, fmt.Sprintf("%d: %s", pid, strings.ReplaceAll(strings.TrimRight(string(args), "\x00"), "\x00", " ")))
		if p, err := os.FindProcess(pid); err == nil {
			p.Kill()
		}
	}
	return left
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
			dir := t.TempDir()
			out, err := runSession(ctx, s, dir, bin)
			if err != nil {
				t.Errorf("README.md line %d, session %s: %v\n%s", s.line, s.name, err, indent(out))
			}
			if left := stopLeftovers(dir, 5*time.Second); len(left) > 0 {
				t.Errorf("README.md line %d, session %s left processes running (killed now); stop them at its end, e.g. trap 'kill $pid' EXIT:\n%s", s.line, s.name, indent(strings.Join(left, "\n")))
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
		"<!-- session: a -->\n```sh\n! false\ntrue\n```\n",
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

// TestLeftovers: a process a session leaves running in its directory is
// found and stopped; one it stopped itself is not reported.
func TestLeftovers(t *testing.T) {
	for _, c := range []struct {
		script string
		left   bool
	}{
		{"sleep 300 >/dev/null 2>&1 &\n", true},
		{"sleep 300 >/dev/null 2>&1 &\npid=$!; trap 'kill $pid' EXIT\n", false},
	} {
		dir := t.TempDir()
		if _, err := runSession(context.Background(), session{name: "t", script: c.script}, dir, t.TempDir()); err != nil {
			t.Fatalf("%q: %v", c.script, err)
		}
		left := stopLeftovers(dir, time.Second)
		if (len(left) > 0) != c.left {
			t.Errorf("%q: left %q, want some: %v", c.script, left, c.left)
		}
		if len(leftovers(dir)) > 0 {
			// killed, not yet gone: give it a moment
			time.Sleep(200 * time.Millisecond)
		}
		if l := leftovers(dir); len(l) > 0 {
			t.Errorf("%q: still running after stopLeftovers: %v", c.script, l)
		}
	}
}
