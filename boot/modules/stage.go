package modules

import (
	"sort"
	"strings"
)

// Stage is the boot step that first needs a module. The boot loads the
// Devices stage before it waits for partitions and the others in the
// background (Network only when a key needs the network), waiting for a
// stage only right before the step that needs it, so their loading overlaps
// the device waits and the KDF instead of adding to them.
type Stage string

// The stages, in the order the boot needs them.
const (
	StageDevices     Stage = "devices"     // buses and disk drivers: everything not below
	StageMapping     Stage = "mapping"     // device-mapper and the crypto it uses
	StageFilesystems Stage = "filesystems" // filesystems and their libraries
	StageNetwork     Stage = "network"     // network drivers and their helpers
)

// stageDirs maps a directory of the kernel's module tree (as modules.dep
// spells it) to its stage; the longest matching prefix wins. Where a
// module lives says what it is for, so no module is named here.
var stageDirs = []struct {
	prefix string
	stage  Stage
}{
	{"kernel/drivers/md/", StageMapping},
	{"kernel/crypto/", StageMapping},
	{"kernel/arch/*/crypto/", StageMapping},
	{"kernel/fs/", StageFilesystems},
	{"kernel/lib/", StageFilesystems},
	{"kernel/drivers/net/", StageNetwork},
	{"kernel/net/", StageNetwork},
}

// StageOf tells the stage of a module from its path in modules.dep
// ("kernel/fs/xfs/xfs.ko" is a filesystem). Paths outside the known
// directories belong to StageDevices, the stage everything waits for, so
// an unknown module is never loaded late.
func StageOf(path string) Stage {
	path = strings.TrimPrefix(strings.TrimSpace(path), "/")
	for _, d := range stageDirs {
		if matchPrefix(d.prefix, path) {
			return d.stage
		}
	}
	return StageDevices
}

// matchPrefix reports whether path starts with prefix, where a "*"
// component in prefix matches any one directory name.
func matchPrefix(prefix, path string) bool {
	pp := strings.Split(strings.TrimSuffix(prefix, "/"), "/")
	p := strings.Split(path, "/")
	if len(p) <= len(pp) {
		return false // the last element of path is the file
	}
	for i, c := range pp {
		if c != "*" && c != p[i] {
			return false
		}
	}
	return true
}

// Stage lists the shipped modules of stage s, sorted. Their dependencies
// may belong to other stages; loading resolves them either way, once.
func (l *Loader) Stage(s Stage) []string {
	var out []string
	for m, path := range l.paths {
		if StageOf(path) == s {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}
