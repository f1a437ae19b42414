package netboot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeNet is Hardware in memory. Carrier appears on a link carrierAfter
// Links() calls after it was set up (0: at once, -1: never).
type fakeNet struct {
	mu           sync.Mutex
	links        []Link
	carrierAfter map[string]int
	polls        map[string]int
	addrs        map[string][]netip.Prefix
	routes       map[string][]netip.Addr
	log          []string
}

func newFakeNet(links ...Link) *fakeNet {
	return &fakeNet{links: links, carrierAfter: map[string]int{}, polls: map[string]int{}, addrs: map[string][]netip.Prefix{}, routes: map[string][]netip.Addr{}}
}

func eth(name string) Link {
	return Link{Name: name, Ethernet: true, MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(len(name))}}
}

func (f *fakeNet) Links() ([]Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.links {
		l := &f.links[i]
		if l.Up && !l.Carrier {
			n, ok := f.carrierAfter[l.Name]
			if !ok || (n >= 0 && f.polls[l.Name] >= n) {
				l.Carrier = true
			}
			f.polls[l.Name]++
		}
	}
	return slices.Clone(f.links), nil
}

func (f *fakeNet) link(name string) (*Link, error) {
	for i := range f.links {
		if f.links[i].Name == name {
			return &f.links[i], nil
		}
	}
	return nil, fmt.Errorf("no link %s", name)
}

func (f *fakeNet) SetUp(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.link(name)
	if err != nil {
		return err
	}
	l.Up = true
	f.log = append(f.log, "up "+name)
	return nil
}

func (f *fakeNet) SetDown(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.link(name)
	if err != nil {
		return err
	}
	l.Up, l.Carrier = false, false
	f.log = append(f.log, "down "+name)
	return nil
}

func (f *fakeNet) AddAddr(name string, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[name] = append(f.addrs[name], p)
	f.log = append(f.log, "addr "+name+" "+p.String())
	return nil
}

func (f *fakeNet) AddDefaultRoute(name string, gw netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[name] = append(f.routes[name], gw)
	f.log = append(f.log, "route "+name+" "+gw.String())
	return nil
}

func (f *fakeNet) Flush(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.addrs, name)
	delete(f.routes, name)
	f.log = append(f.log, "flush "+name)
	return nil
}

// fakeDHCP leases 10.9.0.x/24 per link, or fails for links in fail.
type fakeDHCP struct {
	fail map[string]bool
}

func (d fakeDHCP) Lease(ctx context.Context, iface string) (Lease, error) {
	if d.fail[iface] {
		return Lease{}, fmt.Errorf("%s: no offer: timeout", iface)
	}
	n := byte(len(iface))
	return Lease{
		Addr:     netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, 0, n}), 24),
		Router:   netip.MustParseAddr("10.9.0.1"),
		DNS:      []netip.Addr{netip.MustParseAddr("10.9.0.53")},
		Server:   netip.MustParseAddr("10.9.0.1"),
		Domain:   "lab.example",
		Duration: time.Hour,
	}, nil
}

func upWith(t *testing.T, hw *fakeNet, dhcp DHCP, cmdline string) (*Session, string, error) {
	t.Helper()
	specs, err := ParseCmdline(cmdline)
	if err != nil {
		t.Fatal(err)
	}
	resolv := filepath.Join(t.TempDir(), "etc", "resolv.conf")
	s, err := Up(context.Background(), Config{IP: specs, Hardware: hw, DHCP: dhcp, ResolvConf: resolv, CarrierTimeout: time.Second})
	return s, resolv, err
}

func TestUpDHCPOnLinksWithCarrier(t *testing.T) {
	lo := Link{Name: "lo", Loopback: true, Ethernet: false}
	hw := newFakeNet(lo, eth("eth0"), eth("eth1"), Link{Name: "sit0"})
	hw.carrierAfter["eth0"] = 3 // carrier comes a little later
	hw.carrierAfter["eth1"] = -1
	s, resolv, err := upWith(t, hw, fakeDHCP{}, "console=ttyS0")
	if err != nil {
		t.Fatal(err)
	}
	rec := s.Record()
	if len(rec.Interfaces) != 1 || rec.Interfaces[0].Name != "eth0" || rec.Interfaces[0].Method != MethodDHCP {
		t.Fatalf("configured %+v, want DHCP on eth0 only", rec.Interfaces)
	}
	if !slices.Equal(rec.Raised, []string{"eth0", "eth1"}) {
		t.Fatalf("raised %v, want eth0 and eth1 (never lo or sit0)", rec.Raised)
	}
	if got := hw.addrs["eth0"]; len(got) != 1 || got[0].String() != "10.9.0.4/24" || hw.routes["eth0"][0].String() != "10.9.0.1" {
		t.Fatalf("eth0 addrs %v routes %v", got, hw.routes["eth0"])
	}
	b, err := os.ReadFile(resolv)
	if err != nil || !strings.Contains(string(b), "nameserver 10.9.0.53\n") || !strings.Contains(string(b), "search lab.example") {
		t.Fatalf("resolv.conf = %q, %v", b, err)
	}
	if rec.ResolvConf != resolv || len(rec.DNS) != 1 {
		t.Fatalf("record DNS %v resolv %q", rec.DNS, rec.ResolvConf)
	}
	if err := s.Down(); err != nil {
		t.Fatal(err)
	}
	if len(hw.addrs) != 0 || len(hw.routes) != 0 {
		t.Fatalf("after Down: addrs %v routes %v", hw.addrs, hw.routes)
	}
	for _, l := range hw.links {
		if l.Up {
			t.Fatalf("link %s still up after Down", l.Name)
		}
	}
}

func TestUpStaticNamedLink(t *testing.T) {
	hw := newFakeNet(eth("eth0"), eth("eth1"))
	s, resolv, err := upWith(t, hw, fakeDHCP{fail: map[string]bool{"eth1": true}},
		"ip=192.168.7.20::192.168.7.1:255.255.255.0:node1:eth1:none:192.168.7.53")
	if err != nil {
		t.Fatal(err)
	}
	rec := s.Record()
	if len(rec.Interfaces) != 1 || rec.Interfaces[0].Name != "eth1" || rec.Interfaces[0].Addr.String() != "192.168.7.20/24" || rec.Interfaces[0].Hostname != "node1" {
		t.Fatalf("configured %+v", rec.Interfaces)
	}
	if !slices.Equal(rec.Raised, []string{"eth1"}) {
		t.Fatalf("raised %v, want only eth1 (named by ip=)", rec.Raised)
	}
	if b, _ := os.ReadFile(resolv); !strings.Contains(string(b), "nameserver 192.168.7.53") {
		t.Fatalf("resolv.conf = %q", b)
	}
}

func TestUpKeepsGoodLinkWhenOneFails(t *testing.T) {
	hw := newFakeNet(eth("eth0"), eth("eth10"))
	s, _, err := upWith(t, hw, fakeDHCP{fail: map[string]bool{"eth0": true}}, "ip=dhcp")
	if err != nil {
		t.Fatal(err)
	}
	rec := s.Record()
	if len(rec.Interfaces) != 1 || rec.Interfaces[0].Name != "eth10" || len(rec.Failures) != 1 || !strings.Contains(rec.Failures[0], "eth0") {
		t.Fatalf("interfaces %+v failures %v", rec.Interfaces, rec.Failures)
	}
}

func TestUpFailures(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		hw      func() *fakeNet
		dhcp    fakeDHCP
		want    error
		wantMsg string
	}{
		{name: "ip=off", cmdline: "ip=off", hw: func() *fakeNet { return newFakeNet(eth("eth0")) }, want: ErrDisabled},
		{name: "no ethernet", hw: func() *fakeNet { return newFakeNet(Link{Name: "lo", Loopback: true}) }, want: ErrNoCarrier},
		{name: "no carrier", hw: func() *fakeNet {
			f := newFakeNet(eth("eth0"))
			f.carrierAfter["eth0"] = -1
			return f
		}, want: ErrNoCarrier, wantMsg: "eth0 (no carrier)"},
		{name: "unknown interface", cmdline: "ip=eth7:dhcp", hw: func() *fakeNet { return newFakeNet(eth("eth0")) }, wantMsg: "interface eth7"},
		{name: "dhcp fails everywhere", hw: func() *fakeNet { return newFakeNet(eth("eth0")) }, dhcp: fakeDHCP{fail: map[string]bool{"eth0": true}}, wantMsg: "no offer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hw := tt.hw()
			_, _, err := upWith(t, hw, tt.dhcp, tt.cmdline)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.wantMsg)
			}
			// Nothing is left behind.
			if len(hw.addrs) != 0 {
				t.Fatalf("addresses left after failure: %v", hw.addrs)
			}
			for _, l := range hw.links {
				if l.Up {
					t.Fatalf("link %s left up after failure", l.Name)
				}
			}
		})
	}
}

func TestAssign(t *testing.T) {
	links := []Link{eth("eth0"), eth("eth1"), eth("eth2"), {Name: "lo", Loopback: true, Carrier: true}}
	for i := range links[:3] {
		links[i].Carrier = i != 1
	}
	static := IPConfig{Method: MethodStatic, Addr: netip.MustParsePrefix("10.0.0.2/24")}
	tests := []struct {
		name  string
		specs []IPConfig
		want  []string
	}{
		{"dhcp anywhere", []IPConfig{{Method: MethodDHCP}}, []string{"eth0", "eth2"}},
		{"static anywhere takes the first with carrier", []IPConfig{static}, []string{"eth0"}},
		{"named static plus dhcp elsewhere", []IPConfig{{Interface: "eth2", Method: MethodStatic}, {Method: MethodDHCP}}, []string{"eth2", "eth0"}},
		{"named link without carrier still named", []IPConfig{{Interface: "eth1", Method: MethodDHCP}}, []string{"eth1"}},
	}
	for _, tt := range tests {
		got, err := assign(tt.specs, links)
		var names []string
		for _, g := range got {
			names = append(names, g.link)
		}
		if err != nil || !slices.Equal(names, tt.want) {
			t.Errorf("%s: assign = %v, %v; want %v", tt.name, names, err, tt.want)
		}
	}
}
