package netboot

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// DHCPv4 gets leases with insomniacslk/dhcp's nclient4 (raw sockets on the
// link, so it works before the link has an address).
type DHCPv4 struct {
	// Timeout is how long to wait for each answer; Attempts is how many
	// times each message is sent.
	Timeout  time.Duration
	Attempts int
}

var _ DHCP = DHCPv4{}

// Lease runs DISCOVER/OFFER/REQUEST/ACK on iface.
func (d DHCPv4) Lease(ctx context.Context, iface string) (Lease, error) {
	if d.Timeout <= 0 {
		d.Timeout = DefaultDHCPTimeout
	}
	if d.Attempts <= 0 {
		d.Attempts = DefaultDHCPAttempts
	}
	c, err := nclient4.New(iface, nclient4.WithTimeout(d.Timeout), nclient4.WithRetry(d.Attempts))
	if err != nil {
		return Lease{}, fmt.Errorf("%s: %w", iface, err)
	}
	defer c.Close()
	l, err := c.Request(ctx, dhcpv4.WithRequestedOptions(
		dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionDomainName, dhcpv4.OptionHostName))
	if err != nil {
		return Lease{}, fmt.Errorf("%s: %w (%d attempts of %v)", iface, err, d.Attempts, d.Timeout)
	}
	return leaseFromACK(l.ACK)
}

// leaseFromACK reads the settings out of a DHCPACK.
func leaseFromACK(ack *dhcpv4.DHCPv4) (Lease, error) {
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return Lease{}, fmt.Errorf("DHCPACK from %v has no address", ack.ServerIPAddr)
	}
	bits := 24
	if m := ack.SubnetMask(); m != nil {
		if ones, b := m.Size(); b == 32 && ones > 0 {
			bits = ones
		}
	}
	l := Lease{Addr: netip.PrefixFrom(ip, bits), Hostname: ack.HostName(), Domain: ack.DomainName()}
	for _, r := range ack.Router() {
		if a, ok := netip.AddrFromSlice(r.To4()); ok && !a.IsUnspecified() {
			l.Router = a
			break
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok && !a.IsUnspecified() {
			l.DNS = append(l.DNS, a)
		}
	}
	if s := ack.ServerIdentifier(); s != nil {
		l.Server, _ = netip.AddrFromSlice(s.To4())
	}
	l.Duration = ack.IPAddressLeaseTime(0)
	return l, nil
}
