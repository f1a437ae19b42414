package netboot

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink is Hardware on the running kernel, in the caller's network
// namespace.
type Netlink struct{}

var _ Hardware = Netlink{}

// Links lists the interfaces.
func (Netlink) Links() ([]Link, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	out := make([]Link, 0, len(ls))
	for _, l := range ls {
		a := l.Attrs()
		out = append(out, Link{
			Name:     a.Name,
			MAC:      a.HardwareAddr,
			Ethernet: a.EncapType == "ether",
			Loopback: a.Flags&net.FlagLoopback != 0,
			Up:       a.Flags&net.FlagUp != 0,
			// IFF_LOWER_UP: the driver reports carrier.
			Carrier: a.RawFlags&unix.IFF_LOWER_UP != 0,
		})
	}
	return out, nil
}

func (Netlink) SetUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

func (Netlink) SetDown(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetDown(l)
}

func (Netlink) AddAddr(name string, p netip.Prefix) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return err
	}
	return nil
}

func (Netlink) AddDefaultRoute(name string, gw netip.Addr) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice(), Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
	if err := netlink.RouteReplace(r); err != nil {
		return err
	}
	return nil
}

func (Netlink) Flush(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	var errs []error
	routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range routes {
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("route %v: %w", r.Dst, err))
		}
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		errs = append(errs, err)
	}
	for _, a := range addrs {
		if err := netlink.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("address %v: %w", a.IPNet, err))
		}
	}
	return errors.Join(errs...)
}
