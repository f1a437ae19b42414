package initramfs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cryptinit/cryptinit/boot/modules"
)

// Device is one modalias of the running machine and why it counts: the
// class device ("block", "net", "input") it is an ancestor of, "cpu" for
// the processor's features, or "device" for any other device.
type Device struct {
	Class    string
	Modalias string
}

// ReadHost collects the modaliases --host looks at from a sysfs tree (sys
// is "/sys"): every device above a block, network or input device (the
// disk, its controller, the bus driver), the CPU's, and all others, whose
// drivers are kept only when they are random number generators.
func ReadHost(sys string) ([]Device, error) {
	var out []Device
	seen := map[string]bool{}
	add := func(class, alias string) {
		alias = strings.TrimSpace(alias)
		if k := class + " " + alias; alias != "" && !seen[k] {
			seen[k] = true
			out = append(out, Device{class, alias})
		}
	}
	devices := filepath.Join(sys, "devices")
	for _, class := range []string{"block", "net", "input"} {
		ents, err := os.ReadDir(filepath.Join(sys, "class", class))
		if err != nil {
			continue // a machine without network devices has no class/net
		}
		for _, e := range ents {
			d, err := filepath.EvalSymlinks(filepath.Join(sys, "class", class, e.Name()))
			if err != nil {
				continue
			}
			for ; strings.HasPrefix(d, devices+"/"); d = filepath.Dir(d) {
				if b, err := os.ReadFile(filepath.Join(d, "modalias")); err == nil {
					add(class, string(b))
				}
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(sys, "devices/system/cpu/modalias")); err == nil {
		add("cpu", string(b))
	}
	err := filepath.WalkDir(devices, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable corners of sysfs are not ours
		}
		if d.Type()&os.ModeSymlink != 0 && p != devices {
			return nil
		}
		if d.Name() == "modalias" && !d.IsDir() {
			if b, err := os.ReadFile(p); err == nil {
				add("device", string(b))
			}
		}
		return nil
	})
	if len(out) == 0 {
		return nil, fmt.Errorf("host: no modaliases under %s (is sysfs mounted?): %v", sys, err)
	}
	return out, nil
}

// ParseDevices reads a device list as WriteDevices writes it: one
// "<class> <modalias>" per line.
func ParseDevices(r io.Reader) ([]Device, error) {
	var out []Device
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		class, alias, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("device list: %q is not \"<class> <modalias>\"", line)
		}
		out = append(out, Device{class, strings.TrimSpace(alias)})
	}
	return out, sc.Err()
}

// WriteDevices writes devices for ParseDevices (cryptctl image host-devices
// prints it, to capture a machine in a test).
func WriteDevices(w io.Writer, devs []Device) error {
	for _, d := range devs {
		if _, err := fmt.Fprintf(w, "%s %s\n", d.Class, d.Modalias); err != nil {
			return err
		}
	}
	return nil
}

// hostKeep says which drivers a device class contributes, by where the
// module lives in the kernel tree. Disks and NICs bring every driver on
// their path; input devices only keyboards and the buses under them (no
// mice, event handlers, PC speakers or serio_raw); other devices only hardware random
// number generators (entropy for the KMS's TLS).
var hostKeep = map[string][]string{
	"block": {""},
	"net":   {""},
	"input": {"kernel/drivers/hid/", "kernel/drivers/usb/", "kernel/drivers/input/keyboard/",
		"kernel/drivers/input/serio/i8042.ko", "kernel/drivers/input/serio/serio.ko"},
	"device": {"kernel/drivers/char/hw_random/"},
}

// hostAlgorithms are the algorithms cryptinit uses: of the drivers the CPU's
// modalias matches, --host ships those that implement one of them.
var hostAlgorithms = []string{"crypto-aes", "crypto-xts", "crypto-crc32c"}

// HostModules turns devices into the modules --host ships, by class
// ("storage", "network", "input", "crypto"), each list sorted. Modules built
// into the kernel need nothing and are left out.
func HostModules(l *modules.Loader, devs []Device) map[string][]string {
	accel := map[string]bool{}
	for _, a := range hostAlgorithms {
		for _, m := range l.Resolve(a) {
			accel[m] = true
		}
	}
	names := map[string]string{"block": "storage", "net": "network", "input": "input", "cpu": "crypto", "device": "crypto"}
	sets := map[string]map[string]bool{}
	for _, d := range devs {
		class, ok := names[d.Class]
		if !ok {
			continue
		}
		for _, m := range l.Resolve(d.Modalias) {
			path := l.Closure([]string{m}).Paths[m]
			keep := false
			if d.Class == "cpu" {
				keep = accel[m]
			}
			for _, prefix := range hostKeep[d.Class] {
				keep = keep || strings.HasPrefix(path, prefix)
			}
			if keep {
				if sets[class] == nil {
					sets[class] = map[string]bool{}
				}
				sets[class][m] = true
			}
		}
	}
	out := map[string][]string{}
	for class, set := range sets {
		for m := range set {
			out[class] = append(out[class], m)
		}
		sort.Strings(out[class])
	}
	return out
}

// HostClasses turns HostModules' result into classes for Select, in a
// fixed order.
func HostClasses(byClass map[string][]string) []Class {
	var out []Class
	for _, name := range []string{"storage", "network", "input", "crypto"} {
		if len(byClass[name]) > 0 {
			out = append(out, Class{Name: "host-" + name, Doc: "from this machine's devices", Modules: byClass[name]})
		}
	}
	return out
}
