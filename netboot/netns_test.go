package netboot

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/cryptinit/cryptinit/internal/testenv"
	"github.com/cryptinit/cryptinit/netboot/kms"
)

// The namespace test runs the real netlink and DHCP code in two network
// namespaces the test creates, joined by a veth pair: "client" (eth0, where
// Up runs) and "server" (srv0, 10.77.0.1, a server4 DHCP server). No other
// interface or address is touched. Both sides are this test binary re-run
// under `ip netns exec` with helperEnv naming the role.
const helperEnv = "CRYPTINIT_NETBOOT_HELPER"

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func netnsPair(t *testing.T) (client, server string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.Missing(t, "needs ip(8) from iproute2")
	}
	client = fmt.Sprintf("cinb-%d-c", os.Getpid())
	server = fmt.Sprintf("cinb-%d-s", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", client).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", client).Run() })
	run(t, "ip", "netns", "add", server)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", server).Run() })
	run(t, "ip", "-n", client, "link", "add", "eth0", "type", "veth", "peer", "name", "srv0", "netns", server)
	run(t, "ip", "-n", server, "addr", "add", "10.77.0.1/24", "dev", "srv0")
	run(t, "ip", "-n", server, "link", "set", "srv0", "up")
	return client, server
}

// helper re-runs this test binary in namespace ns as role.
func helper(ns, role string, env ...string) *exec.Cmd {
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestNetnsHelper$", "-test.v")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+role), env...)
	return cmd
}

func TestNetnsDHCPAndStatic(t *testing.T) {
	client, server := netnsPair(t)
	srv := helper(server, "dhcp-server")
	stdout, _ := srv.StdoutPipe()
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "DHCP-READY" {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("DHCP server helper exited")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("DHCP server helper not ready")
	}

	tests := []struct {
		name, cmdline, addr, gw, dns string
		method                       Method
	}{
		{"dhcp", "ip=eth0:dhcp", "10.77.0.50/24", "10.77.0.1", "10.77.0.1", MethodDHCP},
		{"any link", "", "10.77.0.50/24", "10.77.0.1", "10.77.0.1", MethodDHCP},
		{"static", "ip=10.77.0.9::10.77.0.1:255.255.255.0:node9:eth0:none:10.77.0.1", "10.77.0.9/24", "10.77.0.1", "10.77.0.1", MethodStatic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resolv := t.TempDir() + "/resolv.conf"
			os.WriteFile(resolv, nil, 0o644)
			out, err := helper(client, "up", "CMDLINE="+tt.cmdline, "RESOLV="+resolv).CombinedOutput()
			if err != nil {
				t.Fatalf("Up in namespace: %v\n%s", err, out)
			}
			var rec Record
			for _, line := range strings.Split(string(out), "\n") {
				if j, ok := strings.CutPrefix(line, "RECORD "); ok {
					if err := json.Unmarshal([]byte(j), &rec); err != nil {
						t.Fatalf("record: %v: %s", err, j)
					}
				}
			}
			if len(rec.Interfaces) != 1 {
				t.Fatalf("record %+v\n%s", rec, out)
			}
			ifc := rec.Interfaces[0]
			if ifc.Name != "eth0" || ifc.Method != tt.method || ifc.Addr.String() != tt.addr || ifc.Gateway.String() != tt.gw {
				t.Fatalf("configured %+v, want %s %s via %s", ifc, tt.method, tt.addr, tt.gw)
			}
			if tt.method == MethodDHCP && (ifc.DHCPServer.String() != "10.77.0.1" || ifc.Lease != time.Hour) {
				t.Fatalf("lease facts %+v", ifc)
			}
			for _, want := range []string{"KERNEL-OK", "KMS-OK", "DOWN-OK"} {
				if !strings.Contains(string(out), want) {
					t.Fatalf("helper did not report %s:\n%s", want, out)
				}
			}
			if b, _ := os.ReadFile(resolv); !strings.Contains(string(b), "nameserver "+tt.dns) {
				t.Fatalf("resolv.conf = %q, want nameserver %s", b, tt.dns)
			}
		})
	}
}

// TestNetnsHelper is not a test on its own: it is the body of the helper
// processes of TestNetnsDHCPAndStatic.
func TestNetnsHelper(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "dhcp-server":
		dhcpServer(t)
	case "up":
		upInNamespace(t)
	default:
		t.Skip("helper process for TestNetnsDHCPAndStatic")
	}
}

func dhcpServer(t *testing.T) {
	handler := func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		var typ dhcpv4.MessageType
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			typ = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			typ = dhcpv4.MessageTypeAck
		default:
			return
		}
		server := net.IPv4(10, 77, 0, 1)
		reply, err := dhcpv4.NewReplyFromRequest(m,
			dhcpv4.WithMessageType(typ),
			dhcpv4.WithYourIP(net.IPv4(10, 77, 0, 50)),
			dhcpv4.WithServerIP(server),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithRouter(server),
			dhcpv4.WithDNS(server),
			dhcpv4.WithLeaseTime(3600),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)),
		)
		if err != nil {
			t.Errorf("reply: %v", err)
			return
		}
		if _, err := conn.WriteTo(reply.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}); err != nil {
			t.Errorf("send: %v", err)
		}
	}
	s, err := server4.NewServer("srv0", &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
	if err != nil {
		t.Fatal(err)
	}
	go dnsServer(t)
	go kmsStub(t)
	fmt.Println("DHCP-READY")
	s.Serve() // until the parent kills us
}

func upInNamespace(t *testing.T) {
	specs, err := ParseCmdline(os.Getenv("CMDLINE"))
	if err != nil {
		t.Fatal(err)
	}
	// Up writes /etc/resolv.conf, where Go's resolver reads it; in this
	// helper that path is a bind mount of a temporary file, private to the
	// mount namespace `ip netns exec` made.
	if err := unix.Mount(os.Getenv("RESOLV"), "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount resolv.conf: %v", err)
	}
	s, err := Up(context.Background(), Config{IP: specs, ResolvConf: "/etc/resolv.conf",
		CarrierTimeout: 10 * time.Second, DHCPTimeout: 2 * time.Second, DHCPAttempts: 3, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(s.Record())
	fmt.Printf("RECORD %s\n", j)

	// What the kernel now holds.
	link, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	ifc := s.Record().Interfaces[0]
	addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
	routes, _ := netlink.RouteList(link, netlink.FAMILY_V4)
	hasAddr, hasDefault := false, false
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		hasAddr = hasAddr || a.IP.String() == ifc.Addr.Addr().String() && ones == ifc.Addr.Bits()
	}
	for _, r := range routes {
		gw, _ := netip.AddrFromSlice(r.Gw.To4())
		hasDefault = hasDefault || (r.Dst == nil || r.Dst.IP.IsUnspecified()) && gw == ifc.Gateway
	}
	if !hasAddr || !hasDefault {
		t.Fatalf("kernel has addrs %v routes %v; want %s and a default route via %s", addrs, routes, ifc.Addr, ifc.Gateway)
	}
	// The gateway (the server namespace) answers on the new address.
	conn, err := net.DialTimeout("udp4", ifc.Gateway.String()+":9", time.Second)
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	conn.Close()
	fmt.Println("KERNEL-OK")

	// The KMS by name: DNS from the lease (or ip=), then a gRPC call.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := kms.New(kms.Options{Attempts: 2, Backoff: 100 * time.Millisecond}).Unseal(ctx, "grpc://"+kmsName+":4050", "node-1", []byte("blob"))
	if err != nil || string(got) != "opened:node-1:blob" {
		t.Fatalf("KMS call by name: %q, %v", got, err)
	}
	fmt.Println("KMS-OK")

	if err := s.Down(); err != nil {
		t.Fatal(err)
	}
	link, _ = netlink.LinkByName("eth0")
	addrs, _ = netlink.AddrList(link, netlink.FAMILY_V4)
	if len(addrs) != 0 || link.Attrs().Flags&net.FlagUp != 0 {
		t.Fatalf("after Down: addrs %v flags %v", addrs, link.Attrs().Flags)
	}
	fmt.Println("DOWN-OK")
}

const kmsName = "kms.cryptinit.test"

// dnsServer answers A queries for kmsName with 10.77.0.1 and NXDOMAIN for
// everything else, on 10.77.0.1:53 in the server namespace.
func dnsServer(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "10.77.0.1:53")
	if err != nil {
		t.Errorf("dns: %v", err)
		return
	}
	buf := make([]byte, 1500)
	for {
		n, peer, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError}
		found := strings.EqualFold(q.Name.String(), kmsName+".")
		if found {
			rh.RCode = dnsmessage.RCodeSuccess
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		if found && q.Type == dnsmessage.TypeA {
			b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: [4]byte{10, 77, 0, 1}})
		}
		if out, err := b.Finish(); err == nil {
			pc.WriteTo(out, peer)
		}
	}
}

// kmsStub answers sidero.kms Unseal over h2c on 10.77.0.1:4050 with
// "opened:<node>:<data>": enough to prove the network path; the real server
// is tested against the client in cmd/kms-server.
func kmsStub(t *testing.T) {
	lis, err := net.Listen("tcp4", "10.77.0.1:4050")
	if err != nil {
		t.Errorf("kms stub: %v", err)
		return
	}
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req kms.Request
		if len(b) < 5 || r.URL.Path != kms.MethodUnseal || req.Unmarshal(b[5:]) != nil {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "3")
			return
		}
		msg := (&kms.Response{Data: []byte("opened:" + req.NodeUUID + ":" + string(req.Data))}).Marshal()
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		frame := make([]byte, 5+len(msg))
		binary.BigEndian.PutUint32(frame[1:5], uint32(len(msg)))
		copy(frame[5:], msg)
		w.Write(frame)
		w.Header().Set("Grpc-Status", "0")
	})}
	srv.Serve(lis)
}
