package initramfs

import (
	"fmt"
	"sort"

	"github.com/cryptinit/cryptinit/boot/modules"
)

// ClassModules is what one class brought into the image: the modules it
// added (dependencies included) that no earlier class had already added.
type ClassModules struct {
	Name    string
	Modules []string // normalised names, sorted
	Builtin []string // names the kernel has built in
	Missing []string // names this kernel does not have at all
}

// Selection is the module set of an image.
type Selection struct {
	Classes []ClassModules
	Modules modules.Closure // everything to ship
	Kept    []string        // omitted names kept because a shipped module depends on them
}

// Select resolves the classes' names with the init's resolver
// (boot/modules.Loader.Closure) and leaves out the names in omit. A module
// in omit that another one needs is kept (the init could not load the
// other without it) and reported in Kept.
func Select(l *modules.Loader, classes []Class, omit []string) Selection {
	skip := map[string]bool{}
	for _, o := range omit {
		skip[modules.Normalize(o)] = true
	}
	var sel Selection
	var all []string
	seen := map[string]bool{}
	for _, c := range classes {
		var names []string
		for _, n := range c.Modules {
			if !skip[modules.Normalize(n)] {
				names = append(names, n)
			}
		}
		cl := l.Closure(names)
		cm := ClassModules{Name: c.Name, Builtin: cl.Builtin, Missing: cl.Missing}
		for _, m := range cl.Modules {
			if !seen[m] {
				seen[m] = true
				cm.Modules = append(cm.Modules, m)
			}
		}
		sel.Classes = append(sel.Classes, cm)
		all = append(all, names...)
	}
	sel.Modules = l.Closure(all)
	for m := range skip {
		if _, ok := sel.Modules.Paths[m]; ok {
			sel.Kept = append(sel.Kept, m)
		}
	}
	sort.Strings(sel.Kept)
	return sel
}

// Missing lists, as one error, the names of the classes in strict that
// this kernel lacks (a module the user named must exist; a universal class
// may name drivers a kernel was built without).
func (s Selection) Missing(strict ...string) error {
	var missing []string
	for _, c := range s.Classes {
		for _, st := range strict {
			if c.Name == st {
				missing = append(missing, c.Missing...)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("modules %v: not in this kernel's modules.dep, modules.alias or modules.builtin (check --modules-dir and the names)", missing)
	}
	return nil
}
