package netboot

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// writeResolvConf writes the DNS servers (and search domains) where the Go
// resolver looks for them.
func writeResolvConf(path string, servers []netip.Addr, search []string) error {
	var b strings.Builder
	b.WriteString("# written by cryptinit netboot\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func domains(ifcs []Interface) []string {
	var out []string
	for _, i := range ifcs {
		if i.Domain != "" && !slices.Contains(out, i.Domain) && !strings.ContainsAny(i.Domain, " \t\n") {
			out = append(out, i.Domain)
		}
	}
	return out
}
