// Command demo boots one node twice in QEMU the way a real one boots: OVMF with
// Secure Boot on (our test keys enrolled), a software TPM, the signed UKI with
// cryptinit. The first boot formats and unlocks its disks, the second reopens
// them. It prints both boot timelines and exits 0 only when both boots reached
// the real root with every volume mounted and the first boot's markers found.
//
// `make demo` runs it after `make setup image`; CRYPTINIT_OUT names out/.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cryptinit/cryptinit/images/vm"
)

func main() {
	configPath := flag.String("config", "", "machine config (default images/testdata/demo.yaml)")
	firmware := flag.String("firmware", "secureboot", "secureboot, uefi or direct")
	verbose := flag.Bool("v", false, "print every console line (default: cryptinit's and the root's)")
	keep := flag.Bool("keep", false, "keep the node's disks and logs")
	kind := flag.String("expect-kind", "", `key kind that must open STATE and EPHEMERAL in slot 0 on the second boot (default "tpm" with the default config)`)
	flag.Parse()
	if *kind == "" && *configPath == "" {
		*kind = "tpm"
	}
	os.Exit(run(*configPath, *firmware, *kind, *verbose, *keep))
}

func run(configPath, firmware, kind string, verbose, keep bool) (code int) {
	d := &demo{verbose: verbose, keep: keep}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(fatal); !ok {
				panic(r)
			}
			code = 1
		}
		d.cleanup()
		if code != 0 {
			fmt.Println("demo: FAILED")
		}
	}()
	a, err := vm.LoadArtifacts()
	if err != nil {
		d.Fatal(err)
	}
	if !a.HasInit() {
		d.Fatalf("demo: %s is missing: cmd/cryptinit did not build", a.InitBinary)
	}
	if configPath == "" {
		configPath = filepath.Join(filepath.Dir(a.Dir), "images", "testdata", "demo.yaml")
	}
	cfg, err := os.ReadFile(configPath)
	if err != nil {
		d.Fatal(err)
	}
	fw := map[string]vm.Firmware{"secureboot": vm.SecureBoot, "uefi": vm.UEFI, "direct": vm.Direct}[firmware]
	if firmware != "direct" && fw == vm.Direct {
		d.Fatalf("demo: unknown -firmware %q", firmware)
	}
	n := vm.NewNode(d, a, "demo", vm.TalosLayout())
	n.TPM = true
	fmt.Printf("demo: node %s, disks in %s, config %s, firmware %s\n", n.UUID, n.Dir, configPath, fw)

	var reports []*vm.RootReport
	for boot := 1; boot <= 2; boot++ {
		fmt.Printf("demo: === boot %d ===\n", boot)
		m, r := n.BootToRoot(vm.BootOptions{Firmware: fw, Config: cfg, Cmdline: "cryptinit.reboot-delay=2s"})
		reports = append(reports, r)
		if err := check(r, boot); err != nil {
			d.Fatalf("demo: boot %d: %v", boot, err)
		}
		if err := checkKind(m.Console.Text(), boot, kind); err != nil {
			d.Fatalf("demo: boot %d: %v", boot, err)
		}
	}
	for i, r := range reports {
		printTimeline(i+1, r)
	}
	fmt.Println("demo: OK: both boots reached the real root with STATE and EPHEMERAL mounted; the second found the first boot's markers")
	if kind != "" {
		fmt.Printf("demo: OK: both volumes were sealed with and reopened by their %s key (slot 0)\n", kind)
	}
	return 0
}

// check says whether a boot reached the real root with both volumes mounted
// through dm-crypt and with the markers a boot of that rank must find.
func check(r *vm.RootReport, boot int) error {
	for _, v := range []struct{ point, mapper string }{{"/system/state", "luks2-STATE"}, {"/var", "luks2-EPHEMERAL"}} {
		if err := r.Mounted(v.point, v.mapper); err != nil {
			return err
		}
		m := r.Markers[v.point]
		if m.Found != boot-1 || m.Wrote != boot {
			return fmt.Errorf("%s: marker found %d wrote %d, want found %d wrote %d", v.point, m.Found, m.Wrote, boot-1, boot)
		}
	}
	return nil
}

// checkKind says whether both volumes were formatted (boot 1) or opened
// (boot 2) with slot 0 of the given key kind, from cryptinit's console lines:
// a fallback key opening the volume must not pass for a working TPM.
func checkKind(console string, boot int, kind string) error {
	if kind == "" {
		return nil
	}
	verb := "opened with slot 0 (" + kind
	if boot == 1 {
		verb = "with slot 0 (" + kind
	}
	for _, vol := range []string{"STATE", "EPHEMERAL"} {
		found := false
		for _, line := range strings.Split(console, "\n") {
			if strings.Contains(line, "cryptinit: ") && strings.Contains(line, " "+vol+": ") && strings.Contains(line, verb) {
				found = true
				fmt.Printf("demo: boot %d: %s\n", boot, strings.TrimSpace(line[strings.Index(line, vol+": "):]))
			}
		}
		if !found {
			return fmt.Errorf("%s was not formatted/opened with slot 0 (%s)", vol, kind)
		}
	}
	return nil
}

func printTimeline(boot int, r *vm.RootReport) {
	fmt.Printf("demo: boot %d timeline (QEMU start to real root: %s)\n", boot, r.Elapsed.Round(100*time.Millisecond))
	if len(r.Timeline) == 0 {
		fmt.Println("  (the init printed no timeline)")
		return
	}
	for _, s := range r.Timeline {
		what := s.Name
		if s.Volume != "" {
			what += " " + s.Volume
		}
		if s.Slot != nil {
			what += fmt.Sprintf(" slot %d", *s.Slot)
		}
		errs := ""
		if s.Err != "" {
			errs = "  error: " + s.Err
		}
		fmt.Printf("  %9.1f ms  +%8.1f ms  %s%s\n", s.Start, s.Duration, what, errs)
	}
	split := r.Split()
	var keys []string
	for k := range split {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.0f ms", k, split[k]))
	}
	fmt.Printf("  by kind of work (wall clock, each moment counted once): %s\n", strings.Join(parts, ", "))
}

// demo implements vm.TB for a plain program: Fatal unwinds to run, which
// runs the cleanups and exits 1.
type demo struct {
	verbose  bool
	keep     bool
	cleanups []func()
	dirs     []string
}

type fatal struct{}

func (d *demo) Helper() {}

func (d *demo) Log(args ...any) {
	line := fmt.Sprint(args...)
	if d.verbose || strings.Contains(line, "cryptinit") || strings.Contains(line, vm.RootLinePrefix) ||
		strings.Contains(line, "Secure Boot") || strings.Contains(line, "booting") {
		fmt.Println(line)
	}
}

func (d *demo) Logf(format string, args ...any) { d.Log(fmt.Sprintf(format, args...)) }

func (d *demo) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, args...)
	panic(fatal{})
}

func (d *demo) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	panic(fatal{})
}

func (d *demo) Cleanup(f func()) { d.cleanups = append(d.cleanups, f) }

func (d *demo) TempDir() string {
	dir, err := os.MkdirTemp("", "cryptinit-demo-")
	if err != nil {
		d.Fatal(err)
	}
	d.dirs = append(d.dirs, dir)
	return dir
}

func (d *demo) cleanup() {
	for i := len(d.cleanups) - 1; i >= 0; i-- {
		d.cleanups[i]()
	}
	for _, dir := range d.dirs {
		if d.keep {
			fmt.Println("demo: kept", dir)
			continue
		}
		os.RemoveAll(dir)
	}
}
