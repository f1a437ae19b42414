package version

import (
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	stamped := &debug.BuildInfo{GoVersion: "go1.99", Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"},
	}}
	for _, c := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"stamped", stamped, true, "version dev, commit abc123 (modified), go1.99"},
		{"no vcs", &debug.BuildInfo{GoVersion: "go1.99"}, true, "version dev, commit unknown, go1.99"},
		{"no build info", nil, false, "version dev, commit unknown, go"},
	} {
		if got := fromBuildInfo(c.bi, c.ok).String(); !strings.HasPrefix(got, c.want) {
			t.Errorf("%s: %q, want prefix %q", c.name, got, c.want)
		}
	}
	Commit = "fromldflags"
	defer func() { Commit = "" }()
	if got := fromBuildInfo(&debug.BuildInfo{}, true).Commit; got != "fromldflags" {
		t.Errorf("commit without vcs stamp = %q, want the -X one", got)
	}
	if got := fromBuildInfo(stamped, true).Commit; got != "abc123" {
		t.Errorf("commit with vcs stamp = %q, want Go's", got)
	}
}

// TestMakeBuildStampsVersion: make build sets the variables this package
// reads (a rename here would silently print "dev").
func TestMakeBuildStampsVersion(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"Version", "Commit"} {
		if want := "-X github.com/cryptinit/cryptinit/internal/version." + v + "="; !strings.Contains(string(mk), want) {
			t.Errorf("Makefile does not set %s", want)
		}
	}
	if !strings.Contains(string(mk), "$(VERSION_LDFLAGS)' -o $(OUT)/bin/ ./cmd/...") {
		t.Error("make build does not pass VERSION_LDFLAGS")
	}
}
