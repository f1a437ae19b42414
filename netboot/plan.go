package netboot

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrDisabled is returned when the command line turns networking off
// (ip=off or ip=none) but a volume needs the network.
var ErrDisabled = errors.New("networking is disabled by ip=off/none on the kernel command line")

// ErrNoCarrier is returned when no usable link got carrier in time.
var ErrNoCarrier = errors.New("no network link has carrier")

// target is one interface to configure and how.
type target struct {
	link string
	spec IPConfig
}

// effective drops ip=<iface>:off entries and turns "no ip= at all" into
// DHCP on any link. It fails when everything is off.
func effective(specs []IPConfig) ([]IPConfig, error) {
	if len(specs) == 0 {
		return []IPConfig{{Method: MethodDHCP}}, nil
	}
	var out []IPConfig
	for _, s := range specs {
		if s.Method != MethodOff {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, ErrDisabled
	}
	return out, nil
}

// usable are the links netboot may touch: Ethernet-like, not loopback.
func usable(links []Link) []Link {
	var out []Link
	for _, l := range links {
		if l.Ethernet && !l.Loopback {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b Link) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// toRaise lists the links to set up: the named ones, or every usable link
// when some ip= (or none) leaves the interface open.
func toRaise(specs []IPConfig, links []Link) ([]string, error) {
	u := usable(links)
	var names []string
	anyLink := false
	for _, s := range specs {
		if s.Interface == "" {
			anyLink = true
			continue
		}
		if !slices.ContainsFunc(u, func(l Link) bool { return l.Name == s.Interface }) {
			return nil, fmt.Errorf("interface %s named by ip= does not exist or is not Ethernet (have: %s); correct the name in ip= on the kernel command line", s.Interface, linkNames(u))
		}
		if !slices.Contains(names, s.Interface) {
			names = append(names, s.Interface)
		}
	}
	if anyLink {
		for _, l := range u {
			if !slices.Contains(names, l.Name) {
				names = append(names, l.Name)
			}
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: no Ethernet interface found (have: %s); is the network card's driver module in the initramfs?", ErrNoCarrier, linkNames(links))
	}
	return names, nil
}

// carrierReady reports whether enough links have carrier to proceed: every
// named link, and at least one for an ip= without interface.
func carrierReady(specs []IPConfig, links []Link) bool {
	carrier := map[string]bool{}
	anyCarrier := false
	for _, l := range usable(links) {
		carrier[l.Name] = l.Carrier
		anyCarrier = anyCarrier || l.Carrier
	}
	for _, s := range specs {
		if s.Interface == "" && !anyCarrier {
			return false
		}
		if s.Interface != "" && !carrier[s.Interface] {
			return false
		}
	}
	return true
}

// assign turns specs into targets once carrier is known: a named link as
// given; DHCP without a name on every usable link with carrier not named
// elsewhere; a static address without a name on the first such link.
func assign(specs []IPConfig, links []Link) ([]target, error) {
	u := usable(links)
	named := map[string]bool{}
	for _, s := range specs {
		if s.Interface != "" {
			named[s.Interface] = true
		}
	}
	var out []target
	taken := map[string]bool{}
	for _, s := range specs {
		if s.Interface != "" {
			if !taken[s.Interface] {
				out = append(out, target{link: s.Interface, spec: s})
				taken[s.Interface] = true
			}
			continue
		}
		for _, l := range u {
			if !l.Carrier || named[l.Name] || taken[l.Name] {
				continue
			}
			out = append(out, target{link: l.Name, spec: s})
			taken[l.Name] = true
			if s.Method == MethodStatic {
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w (links: %s)", ErrNoCarrier, linkNames(u))
	}
	return out, nil
}

func linkNames(links []Link) string {
	if len(links) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, l := range links {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(l.Name)
		switch {
		case l.Loopback:
			b.WriteString(" (loopback)")
		case !l.Ethernet:
			b.WriteString(" (not Ethernet)")
		case !l.Carrier:
			b.WriteString(" (no carrier)")
		}
	}
	return b.String()
}
