package modules

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Closure is what an image must ship so that Load succeeds for some names:
// the tables Load walks (Resolve, modules.dep, modules.softdep) walked the
// same way, without probing. An image builder uses it so that the image and
// the init agree on what a name needs; there is one resolver, this one.
type Closure struct {
	Modules []string          // normalised names of every module to ship, sorted
	Paths   map[string]string // their paths in modules.dep
	Builtin []string          // requested names built into the kernel: nothing to ship
	Missing []string          // requested names neither shipped nor built in
}

// Closure resolves names (modules or aliases) to every module loading them
// may probe: each module an alias stands for (Load tries them in turn, so
// the image ships all of them), their hard dependencies and their soft pre-
// and post-dependencies. A soft dependency that matches nothing is skipped,
// as Load skips it. Built-in modules come from modules.builtin in l.Dir.
func (l *Loader) Closure(names []string) Closure {
	builtin := readBuiltin(l.Dir)
	c := Closure{Paths: map[string]string{}}
	var visit func(mod string)
	visit = func(mod string) {
		if _, ok := c.Paths[mod]; ok {
			return
		}
		c.Paths[mod] = l.paths[mod]
		for _, pre := range l.softPre[mod] {
			for _, m := range l.Resolve(pre) {
				visit(m)
			}
		}
		for _, d := range l.deps[mod] {
			if l.files[d] {
				visit(d)
			}
		}
		for _, post := range l.softPst[mod] {
			for _, m := range l.Resolve(post) {
				visit(m)
			}
		}
	}
	for _, n := range names {
		mods := l.Resolve(n)
		switch {
		case len(mods) > 0:
			for _, m := range mods {
				visit(m)
			}
		case builtin[Normalize(n)]:
			c.Builtin = append(c.Builtin, Normalize(n))
		default:
			c.Missing = append(c.Missing, n)
		}
	}
	for m := range c.Paths {
		c.Modules = append(c.Modules, m)
	}
	sort.Strings(c.Modules)
	return c
}

// readBuiltin reads modules.builtin ("kernel/drivers/ata/ahci.ko" per line)
// into a set of normalised module names; a missing file is an empty set.
func readBuiltin(dir string) map[string]bool {
	set := map[string]bool{}
	b, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return set
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			set[Normalize(ModuleName(line))] = true
		}
	}
	return set
}
