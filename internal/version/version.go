// Package version says which build of cryptinit's tools is running: the
// release set by `make build` (-ldflags -X), the VCS commit Go stamped into
// the binary, and the Go version that built it.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release name; `make build` sets it with
// -ldflags '-X github.com/cryptinit/cryptinit/internal/version.Version=...'.
var Version = "dev"

// Commit is the VCS revision when the build could not stamp one (go build
// -buildvcs=false); `make build` sets it with -X as well.
var Commit = ""

// Info is what a version command prints.
type Info struct {
	Version   string
	Commit    string // "unknown" when neither Go nor the build stamped one
	Modified  bool   // the work tree had uncommitted changes
	GoVersion string
}

// Get reads the build information of the running binary.
func Get() Info {
	return fromBuildInfo(debug.ReadBuildInfo())
}

func fromBuildInfo(bi *debug.BuildInfo, ok bool) Info {
	i := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Commit = s.Value
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
		if bi.GoVersion != "" {
			i.GoVersion = bi.GoVersion
		}
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	return i
}

// String is what a version command prints after the tool's name, e.g.
// "version v0.4, commit 14655b2… (modified), go1.26.8".
func (i Info) String() string {
	mod := ""
	if i.Modified {
		mod = " (modified)"
	}
	return fmt.Sprintf("version %s, commit %s%s, %s", i.Version, i.Commit, mod, i.GoVersion)
}
