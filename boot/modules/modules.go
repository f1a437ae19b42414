// Package modules loads the kernel modules shipped in the initramfs, with no
// modprobe: dependencies come from modules.dep (through u-root's kmodule),
// soft dependencies from modules.softdep (e.g. "ext4 pre: crypto-crc32c") and
// aliases from modules.alias, with '-' and '_' interchangeable as modprobe
// treats them. Nothing about particular modules is hard-coded here.
package modules

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Prober loads one module file by name and its modules.dep dependencies;
// u-root's kmodule.Prober satisfies it.
type Prober interface {
	Probe(name, params string) error
}

// Loader resolves names through the tables of one modules directory and
// loads them with a Prober.
type Loader struct {
	Dir    string // /lib/modules/<release>
	Prober Prober

	files   map[string]bool     // normalised names of shipped modules (from modules.dep)
	paths   map[string]string   // their paths in modules.dep ("kernel/fs/xfs/xfs.ko")
	deps    map[string][]string // modules.dep: hard dependencies by normalised name
	aliases []alias             // modules.alias, in file order
	softPre map[string][]string // softdep pre:, by normalised module name
	softPst map[string][]string // softdep post:

	mu   sync.Mutex
	done map[string]*once // normalised module name -> its one probe
}

type alias struct{ pattern, module string }

// Open reads the tables in dir. modules.dep must exist; softdep and alias
// files are optional.
func Open(dir string, p Prober) (*Loader, error) {
	l := &Loader{Dir: dir, Prober: p, files: map[string]bool{}, paths: map[string]string{}, deps: map[string][]string{}, softPre: map[string][]string{},
		softPst: map[string][]string{}, done: map[string]*once{}}
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	for _, line := range strings.Split(string(dep), "\n") {
		path, deps, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name := Normalize(ModuleName(path))
		l.files[name] = true
		l.paths[name] = strings.TrimSpace(path)
		for _, d := range strings.Fields(deps) {
			l.deps[name] = append(l.deps[name], Normalize(ModuleName(d)))
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.alias")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && f[0] == "alias" {
				l.aliases = append(l.aliases, alias{Normalize(f[1]), Normalize(f[2])})
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.softdep")); err == nil {
		l.parseSoftdep(string(b))
	}
	return l, nil
}

func (l *Loader) parseSoftdep(s string) {
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "softdep" {
			continue
		}
		mod := Normalize(f[1])
		var pre, post []string
		into := (*[]string)(nil)
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				into = &pre
			case "post:":
				into = &post
			default:
				if into != nil {
					*into = append(*into, Normalize(w))
				}
			}
		}
		l.softPre[mod] = append(l.softPre[mod], pre...)
		l.softPst[mod] = append(l.softPst[mod], post...)
	}
}

// ModuleName turns a path in modules.dep ("kernel/fs/ext4/ext4.ko.xz") into
// the module name ("ext4").
func ModuleName(path string) string {
	base := filepath.Base(strings.TrimSpace(path))
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return base
}

// Normalize maps '-' to '_' outside bracket expressions, as modprobe does, so
// "dm-crypt" and "dm_crypt" name the same module.
func Normalize(s string) string {
	b := []byte(s)
	depth := 0
	for i, c := range b {
		switch c {
		case '[':
			depth++
		case ']':
			if depth > 0 {
				depth--
			}
		case '-':
			if depth == 0 {
				b[i] = '_'
			}
		}
	}
	return string(b)
}

// Shipped lists the modules present in modules.dep, sorted.
func (l *Loader) Shipped() []string {
	out := make([]string, 0, len(l.files))
	for m := range l.files {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// Resolve returns the modules a name stands for: the module itself when it
// is shipped, else every module whose alias pattern matches, in file order.
func (l *Loader) Resolve(name string) []string {
	n := Normalize(name)
	if l.files[n] {
		return []string{n}
	}
	var out []string
	seen := map[string]bool{}
	for _, a := range l.aliases {
		if ok, _ := filepath.Match(a.pattern, n); ok && !seen[a.module] && l.files[a.module] {
			seen[a.module] = true
			out = append(out, a.module)
		}
	}
	return out
}

// ErrNotShipped: no module file and no alias matches the name.
var ErrNotShipped = errors.New("module not shipped in the image")

// Load loads name (a module or an alias) with its soft and hard
// dependencies. An alias is satisfied when any module it resolves to loads
// (crypto-crc32c: crc32c-intel may fail without SSE4.2, crc32c_generic
// loads). Safe for concurrent use; each module is tried once.
func (l *Loader) Load(name string) error {
	return l.load(name, nil)
}

func (l *Loader) load(name string, stack []string) error {
	mods := l.Resolve(name)
	if len(mods) == 0 {
		return fmt.Errorf("load %s: %w", name, ErrNotShipped)
	}
	var errs []error
	for _, m := range mods {
		err := l.loadModule(m, stack)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (l *Loader) loadModule(mod string, stack []string) error {
	for _, s := range stack {
		if s == mod {
			return nil // soft dependency cycle: the outer call loads it
		}
	}
	stack = append(stack, mod)
	// Soft pre-dependencies are best effort, as in modprobe.
	for _, pre := range l.softPre[mod] {
		l.load(pre, stack)
	}
	// Hard dependencies go through here too, not only through the
	// Prober, so that their own soft dependencies are loaded first
	// (xfs needs libcrc32c, which needs a crc32c driver before it).
	for _, d := range l.deps[mod] {
		if err := l.loadModule(d, stack); err != nil {
			return fmt.Errorf("load %s: dependency: %w", mod, err)
		}
	}
	// Only the probe itself runs once per module: holding nothing while
	// the soft dependencies load means no lock cycle between goroutines.
	l.mu.Lock()
	o := l.done[mod]
	if o == nil {
		o = &once{}
		l.done[mod] = o
	}
	l.mu.Unlock()
	o.Do(func() {
		start := time.Now()
		if err := l.Prober.Probe(mod, ""); err != nil {
			o.err = fmt.Errorf("load %s: %w", mod, err)
		}
		o.took = time.Since(start)
	})
	if o.err == nil {
		for _, post := range l.softPst[mod] {
			l.load(post, stack)
		}
	}
	return o.err
}

type once struct {
	sync.Once
	err  error
	took time.Duration
}

// Timing is how long one module's probe took (its modules.dep
// dependencies included, as kmodule loads them inside the probe).
type Timing struct {
	Module string
	Took   time.Duration
}

// Slowest returns the n slowest probes so far, slowest first.
func (l *Loader) Slowest(n int) []Timing {
	l.mu.Lock()
	var ts []Timing
	for m, o := range l.done {
		ts = append(ts, Timing{m, o.took})
	}
	l.mu.Unlock()
	sort.Slice(ts, func(i, j int) bool { return ts[i].Took > ts[j].Took })
	if len(ts) > n {
		ts = ts[:n]
	}
	return ts
}

// Result is the outcome of LoadAll for one name.
type Result struct {
	Name string
	Err  error
}

// LoadAll loads names concurrently (the kernel initialises independent
// modules in parallel) and returns one result per name, in order.
func (l *Loader) LoadAll(names []string) []Result {
	res := make([]Result, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { // a panic here would end PID 1
				if r := recover(); r != nil {
					res[i] = Result{Name: n, Err: fmt.Errorf("loading %s crashed: %v", n, r)}
				}
			}()
			res[i] = Result{Name: n, Err: l.Load(n)}
		}()
	}
	wg.Wait()
	return res
}
