package netboot

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Defaults for Config fields left zero.
const (
	DefaultCarrierTimeout = 10 * time.Second
	DefaultDHCPTimeout    = 5 * time.Second
	DefaultDHCPAttempts   = 3
	DefaultResolvConf     = "/etc/resolv.conf"
)

// Config says how to bring the network up.
type Config struct {
	// IP are the ip= arguments (see ParseCmdline); none means DHCP on every
	// Ethernet link with carrier.
	IP []IPConfig
	// Hardware is the kernel interface; nil means netlink.
	Hardware Hardware
	// DHCP obtains leases; nil means DHCPv4 with DHCPTimeout per attempt
	// and DHCPAttempts attempts.
	DHCP         DHCP
	DHCPTimeout  time.Duration
	DHCPAttempts int
	// CarrierTimeout bounds the wait for link carrier.
	CarrierTimeout time.Duration
	// ResolvConf is where the DNS servers are written so that the Go
	// resolver finds them; "" means /etc/resolv.conf, "-" writes nothing.
	ResolvConf string
	// Logf, if set, is told about progress and per-link failures.
	Logf func(format string, args ...any)
}

// Interface is what was configured on one link.
type Interface struct {
	Name       string        `json:"name"`
	MAC        string        `json:"mac,omitempty"`
	Method     Method        `json:"method"`
	Addr       netip.Prefix  `json:"addr"`
	Gateway    netip.Addr    `json:"gateway,omitzero"`
	DNS        []netip.Addr  `json:"dns,omitempty"`
	DHCPServer netip.Addr    `json:"dhcp_server,omitzero"`
	Lease      time.Duration `json:"lease,omitempty"`
	Hostname   string        `json:"hostname,omitempty"`
	Domain     string        `json:"domain,omitempty"`
	Took       time.Duration `json:"took"`
}

// Record is what Up did, for the boot timeline.
type Record struct {
	Started    time.Time     `json:"started"`
	Took       time.Duration `json:"took"`
	Raised     []string      `json:"raised"`
	Interfaces []Interface   `json:"interfaces"`
	DNS        []netip.Addr  `json:"dns,omitempty"`
	ResolvConf string        `json:"resolv_conf,omitempty"`
	// Failures are links that could not be configured while others were.
	Failures []string `json:"failures,omitempty"`
}

// Session is networking brought up by Up; Down undoes it.
type Session struct {
	hw     Hardware
	rec    Record
	raised []string
	done   bool
}

// Record returns what Up configured.
func (s *Session) Record() Record { return s.rec }

// Up brings up networking as cfg says and returns the session. On error
// nothing is left configured.
func Up(ctx context.Context, cfg Config) (*Session, error) {
	start := time.Now()
	specs, err := effective(cfg.IP)
	if err != nil {
		return nil, err
	}
	if cfg.Hardware == nil {
		cfg.Hardware = Netlink{}
	}
	if cfg.DHCP == nil {
		cfg.DHCP = DHCPv4{Timeout: cfg.DHCPTimeout, Attempts: cfg.DHCPAttempts}
	}
	if cfg.CarrierTimeout <= 0 {
		cfg.CarrierTimeout = DefaultCarrierTimeout
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	hw := cfg.Hardware
	links, err := hw.Links()
	if err != nil {
		return nil, fmt.Errorf("netboot: list links: %w", err)
	}
	raise, err := toRaise(specs, links)
	if err != nil {
		return nil, fmt.Errorf("netboot: %w", err)
	}
	s := &Session{hw: hw, rec: Record{Started: start}}
	fail := func(err error) (*Session, error) {
		s.Down()
		return nil, fmt.Errorf("netboot: %w", err)
	}
	for _, name := range raise {
		wasUp := slices.ContainsFunc(links, func(l Link) bool { return l.Name == name && l.Up })
		if err := hw.SetUp(name); err != nil {
			return fail(fmt.Errorf("set %s up: %w", name, err))
		}
		if !wasUp {
			s.raised = append(s.raised, name)
		}
	}
	s.rec.Raised = s.raised

	links, err = waitCarrier(ctx, hw, specs, cfg.CarrierTimeout)
	if err != nil {
		return fail(err)
	}
	targets, err := assign(specs, links)
	if err != nil {
		return fail(err)
	}

	// Leases are fetched concurrently (a dead link must not hold up a good
	// one); addresses are then applied in order.
	results := make([]Interface, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			results[i], errs[i] = obtain(ctx, cfg.DHCP, t)
		})
	}
	wg.Wait()
	for i, t := range targets {
		if errs[i] == nil {
			errs[i] = apply(hw, results[i])
		}
		if errs[i] != nil {
			msg := fmt.Sprintf("%s (%s): %v", t.link, t.spec.Method, errs[i])
			logf("netboot: %s", msg)
			s.rec.Failures = append(s.rec.Failures, msg)
			hw.Flush(t.link)
			continue
		}
		if l := findLink(links, t.link); l != nil {
			results[i].MAC = l.MAC.String()
		}
		s.rec.Interfaces = append(s.rec.Interfaces, results[i])
		logf("netboot: %s %s %s gateway %v", t.link, t.spec.Method, results[i].Addr, results[i].Gateway)
	}
	if len(s.rec.Interfaces) == 0 {
		return fail(fmt.Errorf("no interface could be configured: %w", errors.Join(errs...)))
	}
	for _, ifc := range s.rec.Interfaces {
		for _, d := range ifc.DNS {
			if !slices.Contains(s.rec.DNS, d) && len(s.rec.DNS) < 3 {
				s.rec.DNS = append(s.rec.DNS, d)
			}
		}
	}
	path := cfg.ResolvConf
	if path == "" {
		path = DefaultResolvConf
	}
	if path != "-" && len(s.rec.DNS) > 0 {
		if err := writeResolvConf(path, s.rec.DNS, domains(s.rec.Interfaces)); err != nil {
			return fail(err)
		}
		s.rec.ResolvConf = path
	}
	s.rec.Took = time.Since(start)
	return s, nil
}

// Down flushes the addresses and routes Up added and sets the links it
// raised down again, so the real system starts from clean links. Call it
// before switch_root unless networking should be kept.
func (s *Session) Down() error {
	if s == nil || s.done {
		return nil
	}
	s.done = true
	var errs []error
	for _, ifc := range s.rec.Interfaces {
		if err := s.hw.Flush(ifc.Name); err != nil {
			errs = append(errs, fmt.Errorf("flush %s: %w", ifc.Name, err))
		}
	}
	for _, name := range s.raised {
		if err := s.hw.SetDown(name); err != nil {
			errs = append(errs, fmt.Errorf("set %s down: %w", name, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("netboot: %w", errors.Join(errs...))
	}
	return nil
}

func waitCarrier(ctx context.Context, hw Hardware, specs []IPConfig, timeout time.Duration) ([]Link, error) {
	deadline := time.Now().Add(timeout)
	for {
		links, err := hw.Links()
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		if carrierReady(specs, links) {
			return links, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w after %v (links: %s); check the cable and switch port, or name the wired interface in ip=", ErrNoCarrier, timeout, linkNames(usable(links)))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// obtain works out the settings for one target: from ip= or from DHCP.
func obtain(ctx context.Context, dhcp DHCP, t target) (Interface, error) {
	start := time.Now()
	ifc := Interface{Name: t.link, Method: t.spec.Method, Hostname: t.spec.Hostname}
	switch t.spec.Method {
	case MethodStatic:
		ifc.Addr, ifc.Gateway, ifc.DNS = t.spec.Addr, t.spec.Gateway, t.spec.DNS
	case MethodDHCP:
		l, err := dhcp.Lease(ctx, t.link)
		if err != nil {
			return ifc, fmt.Errorf("dhcp: %w", err)
		}
		if !l.Addr.IsValid() || !l.Addr.Addr().Is4() {
			return ifc, fmt.Errorf("dhcp: lease without an IPv4 address")
		}
		ifc.Addr, ifc.Gateway, ifc.DHCPServer, ifc.Lease = l.Addr, l.Router, l.Server, l.Duration
		// DNS servers given on the command line win over DHCP's.
		ifc.DNS = append(slices.Clone(t.spec.DNS), l.DNS...)
		if ifc.Hostname == "" {
			ifc.Hostname = l.Hostname
		}
		ifc.Domain = l.Domain
	default:
		return ifc, fmt.Errorf("method %q cannot configure a link", t.spec.Method)
	}
	ifc.Took = time.Since(start)
	return ifc, nil
}

func apply(hw Hardware, ifc Interface) error {
	if err := hw.AddAddr(ifc.Name, ifc.Addr); err != nil {
		return fmt.Errorf("add address %s: %w", ifc.Addr, err)
	}
	if ifc.Gateway.IsValid() {
		if err := hw.AddDefaultRoute(ifc.Name, ifc.Gateway); err != nil {
			return fmt.Errorf("add default route via %s: %w", ifc.Gateway, err)
		}
	}
	return nil
}

func findLink(links []Link, name string) *Link {
	for i := range links {
		if links[i].Name == name {
			return &links[i]
		}
	}
	return nil
}
