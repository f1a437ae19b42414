// Package netboot brings networking up in the initramfs, only when a volume
// needs the network (a kms key): links up, DHCPv4 or the static setup of a
// dracut-style ip= argument, DNS; and down again before switch_root. It
// returns a Record of what it did for the boot timeline. Hardware (netlink,
// DHCP) sits behind small interfaces so the decisions are unit-tested.
package netboot

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Method is how an interface gets its address.
type Method string

// Methods of an ip= argument.
const (
	MethodDHCP   Method = "dhcp"   // dhcp, on, any, or no ip= at all
	MethodStatic Method = "static" // none or off with a client IP
	MethodOff    Method = "off"    // ip=off / ip=none: no networking
)

// IPConfig is one parsed ip= argument.
type IPConfig struct {
	// Interface is the link to configure; "" means any link with carrier.
	Interface string
	Method    Method
	// Static settings (MethodStatic).
	Addr     netip.Prefix
	Peer     netip.Addr
	Gateway  netip.Addr
	Hostname string
	DNS      []netip.Addr
}

// ErrBadIP reports an ip= argument this package cannot parse.
var ErrBadIP = errors.New("bad ip= argument")

// ParseCmdline returns the ip= arguments of a kernel command line, in order.
func ParseCmdline(cmdline string) ([]IPConfig, error) {
	var out []IPConfig
	for _, f := range strings.Fields(cmdline) {
		v, ok := strings.CutPrefix(f, "ip=")
		if !ok {
			continue
		}
		c, err := ParseIP(v)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// ParseIP parses the value of one dracut-style ip= argument:
//
//	ip={dhcp|on|any|off|none}
//	ip=<interface>:{dhcp|on|any|off|none}
//	ip=<client-IP>:[<peer>]:<gateway-IP>:<netmask>:<client_hostname>:<interface>:{none|off|dhcp|on|any}[:[<dns0>][:<dns1>]]
//
// The netmask may be dotted (255.255.255.0) or a prefix length (24). Only
// IPv4 is supported: the init speaks DHCPv4.
func ParseIP(v string) (IPConfig, error) {
	bad := func(format string, args ...any) (IPConfig, error) {
		return IPConfig{}, fmt.Errorf("%w ip=%s: %s", ErrBadIP, v, fmt.Sprintf(format, args...))
	}
	f := strings.Split(v, ":")
	switch len(f) {
	case 1:
		m, err := autoconf(f[0])
		if err != nil || f[0] == "" {
			return bad("want dhcp, on, any, off, none or a full client:peer:gateway:netmask:hostname:interface:method form")
		}
		return IPConfig{Method: m}, nil
	case 2:
		m, err := autoconf(f[1])
		if err != nil || f[1] == "" {
			return bad("want <interface>:{dhcp|on|any|off|none}")
		}
		if f[0] == "" {
			return bad("interface name is empty")
		}
		return IPConfig{Interface: f[0], Method: m}, nil
	}
	if len(f) < 7 || len(f) > 9 {
		return bad("%d fields; want 7 (client:peer:gateway:netmask:hostname:interface:method) plus up to 2 DNS servers", len(f))
	}
	c := IPConfig{Interface: f[5], Hostname: f[4]}
	m, err := autoconf(f[6])
	if err != nil {
		return bad("%v", err)
	}
	if m == MethodDHCP {
		// dracut ignores the static fields when the method asks for DHCP.
		c.Method = MethodDHCP
	} else {
		c.Method = MethodStatic
		ip, err := parseV4(f[0])
		if err != nil || !ip.IsValid() {
			return bad("client IP %q: want an IPv4 address", f[0])
		}
		bits, err := parseMask(f[3])
		if err != nil {
			return bad("netmask %q: %v", f[3], err)
		}
		c.Addr = netip.PrefixFrom(ip, bits)
		if c.Peer, err = parseV4(f[1]); err != nil {
			return bad("peer %q: want an IPv4 address or nothing", f[1])
		}
		if c.Gateway, err = parseV4(f[2]); err != nil {
			return bad("gateway %q: want an IPv4 address or nothing", f[2])
		}
		if c.Gateway.IsValid() && !c.Addr.Masked().Contains(c.Gateway) {
			return bad("gateway %s is outside %s", c.Gateway, c.Addr.Masked())
		}
	}
	for _, d := range f[7:] {
		a, err := parseV4(d)
		if err != nil {
			return bad("DNS server %q: want an IPv4 address", d)
		}
		if a.IsValid() {
			c.DNS = append(c.DNS, a)
		}
	}
	return c, nil
}

func autoconf(s string) (Method, error) {
	switch s {
	case "", "none", "off":
		return MethodOff, nil
	case "dhcp", "on", "any":
		return MethodDHCP, nil
	case "dhcp6", "auto6", "ibft", "either6", "link6":
		return "", fmt.Errorf("method %q is not supported (DHCPv4 and static IPv4 only)", s)
	}
	return "", fmt.Errorf("unknown method %q", s)
}

// parseV4 parses an optional IPv4 address ("" gives the zero Addr).
func parseV4(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%s is not IPv4", s)
	}
	return a, nil
}

func parseMask(s string) (int, error) {
	if s == "" {
		return 0, errors.New("netmask is required for a static address")
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 32 {
			return 0, fmt.Errorf("prefix length %d out of 1..32", n)
		}
		return n, nil
	}
	a, err := parseV4(s)
	if err != nil {
		return 0, err
	}
	b := a.As4()
	ones, bits := net.IPv4Mask(b[0], b[1], b[2], b[3]).Size()
	if bits == 0 || ones == 0 {
		return 0, errors.New("not a contiguous netmask")
	}
	return ones, nil
}
