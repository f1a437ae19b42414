package netboot

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// Link is a network interface as Hardware reports it.
type Link struct {
	Name     string
	MAC      net.HardwareAddr
	Ethernet bool // ARP-capable Ethernet-like link (physical NIC, veth, ...)
	Loopback bool
	Up       bool
	Carrier  bool
}

// Hardware is the kernel's network configuration (netlink on Linux).
type Hardware interface {
	Links() ([]Link, error)
	SetUp(name string) error
	SetDown(name string) error
	AddAddr(name string, addr netip.Prefix) error
	// AddDefaultRoute adds a default route via gw through the link.
	AddDefaultRoute(name string, gw netip.Addr) error
	// Flush removes the link's IPv4 addresses and the routes through it.
	Flush(name string) error
}

// Lease is what a DHCP server handed out.
type Lease struct {
	Addr     netip.Prefix
	Router   netip.Addr
	DNS      []netip.Addr
	Server   netip.Addr
	Hostname string
	Domain   string
	Duration time.Duration
}

// DHCP obtains a lease on a link.
type DHCP interface {
	Lease(ctx context.Context, iface string) (Lease, error)
}
