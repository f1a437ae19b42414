package netboot

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func TestParseIP(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		in   string
		want IPConfig
	}{
		{"dhcp", IPConfig{Method: MethodDHCP}},
		{"on", IPConfig{Method: MethodDHCP}},
		{"any", IPConfig{Method: MethodDHCP}},
		{"off", IPConfig{Method: MethodOff}},
		{"none", IPConfig{Method: MethodOff}},
		{"eth0:dhcp", IPConfig{Interface: "eth0", Method: MethodDHCP}},
		{"eth1:off", IPConfig{Interface: "eth1", Method: MethodOff}},
		{"192.168.1.10::192.168.1.1:255.255.255.0:node1:eth0:none",
			IPConfig{Interface: "eth0", Method: MethodStatic, Addr: netip.MustParsePrefix("192.168.1.10/24"), Gateway: a("192.168.1.1"), Hostname: "node1"}},
		{"10.0.2.15::10.0.2.2:24::enp0s3:off:10.0.2.3",
			IPConfig{Interface: "enp0s3", Method: MethodStatic, Addr: netip.MustParsePrefix("10.0.2.15/24"), Gateway: a("10.0.2.2"), DNS: []netip.Addr{a("10.0.2.3")}}},
		{"10.1.2.3:10.1.2.4::255.255.255.252::::1.1.1.1:8.8.8.8",
			IPConfig{Method: MethodStatic, Addr: netip.MustParsePrefix("10.1.2.3/30"), Peer: a("10.1.2.4"), DNS: []netip.Addr{a("1.1.1.1"), a("8.8.8.8")}}},
		{"10.1.2.3::10.1.2.1:24::eth0:dhcp:9.9.9.9",
			IPConfig{Interface: "eth0", Method: MethodDHCP, DNS: []netip.Addr{a("9.9.9.9")}}},
	}
	for _, tt := range tests {
		got, err := ParseIP(tt.in)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseIP(%q) =\n %+v, %v\nwant\n %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseIPRejects(t *testing.T) {
	for _, in := range []string{
		"", "dhcpx", "eth0:", ":dhcp", "eth0:dhcp6",
		"1.2.3.4::1.2.3.1:255.255.0.255::eth0:none", // non-contiguous mask
		"1.2.3.4::9.9.9.9:24::eth0:none",            // gateway outside the subnet
		"::1.2.3.1:24::eth0:none",                   // no client IP
		"fe80::1::::::",                             // IPv6
		"1.2.3.4::1.2.3.1:33::eth0:none",
		"1.2.3.4::1.2.3.1:24::eth0:none:notanip",
		"1.2.3.4::1.2.3.1:24::eth0:none:1.1.1.1:2.2.2.2:3.3.3.3",
		"1.2.3.4:1.2.3.1:24",
		"10.1.2.3::::eth0:eth0::", // static without a netmask
	} {
		if c, err := ParseIP(in); !errors.Is(err, ErrBadIP) {
			t.Errorf("ParseIP(%q) = %+v, %v; want ErrBadIP", in, c, err)
		}
	}
}

func TestParseCmdline(t *testing.T) {
	got, err := ParseCmdline("console=ttyS0 ip=eth0:dhcp quiet ip=eth1:off cryptinit.kms.ca=/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	want := []IPConfig{{Interface: "eth0", Method: MethodDHCP}, {Interface: "eth1", Method: MethodOff}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseCmdline = %+v, want %+v", got, want)
	}
	if _, err := ParseCmdline("ip=bogus"); !errors.Is(err, ErrBadIP) {
		t.Fatalf("ParseCmdline(ip=bogus) err = %v", err)
	}
	if got, _ := ParseCmdline("root=/dev/sda"); len(got) != 0 {
		t.Fatalf("no ip= gives %+v", got)
	}
}

func FuzzParseIP(f *testing.F) {
	for _, s := range []string{"dhcp", "eth0:dhcp", "192.168.1.10::192.168.1.1:255.255.255.0:node1:eth0:none:8.8.8.8", "1.2.3.4::1.2.3.1:24::eth0:off"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseIP(s)
		if err != nil {
			if !errors.Is(err, ErrBadIP) {
				t.Fatalf("ParseIP(%q) error %v is not ErrBadIP", s, err)
			}
			return
		}
		switch c.Method {
		case MethodDHCP, MethodOff:
		case MethodStatic:
			if !c.Addr.IsValid() || !c.Addr.Addr().Is4() || c.Addr.Bits() < 1 {
				t.Fatalf("ParseIP(%q) static without a usable address: %+v", s, c)
			}
			if c.Gateway.IsValid() && !c.Addr.Masked().Contains(c.Gateway) {
				t.Fatalf("ParseIP(%q) gateway outside the subnet: %+v", s, c)
			}
		default:
			t.Fatalf("ParseIP(%q) method %q", s, c.Method)
		}
		for _, d := range c.DNS {
			if !d.Is4() {
				t.Fatalf("ParseIP(%q) DNS %v", s, d)
			}
		}
	})
}
