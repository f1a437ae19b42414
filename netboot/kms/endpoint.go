package kms

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// DefaultPort is used when an endpoint names no port: the port of the
// reference kms-server. An https:// endpoint without a port uses 443.
const DefaultPort = "4050"

// Endpoint is a parsed KMS endpoint.
type Endpoint struct {
	// Address is host:port.
	Address string
	// TLS is false only for an explicit grpc:// scheme: an endpoint with no
	// scheme, https:// or any other scheme is TLS.
	TLS bool
	// NoScheme is true for a bare host[:port], which Talos serves in
	// plaintext and cryptinit over TLS: errors then say how to ask for
	// plaintext.
	NoScheme bool
}

// ParseEndpoint parses a KMS endpoint of a machine config. Plaintext only
// when asked for by name: "grpc://host:port" is plaintext, "host:port",
// "https://host:port" and any other scheme are TLS. Talos reads a bare
// "host:port" as plaintext; cryptinit does not, so that a sealed blob and a
// node UUID never cross the network in clear unless the config says so.
func ParseEndpoint(s string) (Endpoint, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Endpoint{}, fmt.Errorf("kms endpoint is empty")
	}
	ep := Endpoint{TLS: true, NoScheme: true}
	host := s
	if i := strings.Index(s, "://"); i >= 0 {
		u, err := url.Parse(s)
		if err != nil {
			return Endpoint{}, fmt.Errorf("kms endpoint %q: %w", s, err)
		}
		if u.Host == "" {
			return Endpoint{}, fmt.Errorf("kms endpoint %q has no host", s)
		}
		if u.Path != "" && u.Path != "/" {
			return Endpoint{}, fmt.Errorf("kms endpoint %q: a gRPC endpoint has no path", s)
		}
		host = u.Host
		ep.NoScheme = false
		ep.TLS = !strings.EqualFold(u.Scheme, "grpc")
	} else if strings.ContainsAny(s, "/?#") {
		return Endpoint{}, fmt.Errorf("kms endpoint %q: want host:port, grpc://host:port or https://host:port", s)
	}
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		// No port: add the default one. A bare IPv6 address needs brackets.
		h = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		p = DefaultPort
		if ep.TLS && !ep.NoScheme {
			p = "443"
		}
	}
	if h == "" {
		return Endpoint{}, fmt.Errorf("kms endpoint %q has no host", s)
	}
	ep.Address = net.JoinHostPort(h, p)
	return ep, nil
}

// Host is the host part of the address, the name a TLS certificate must carry.
func (e Endpoint) Host() string {
	h, _, _ := net.SplitHostPort(e.Address)
	return h
}

func (e Endpoint) String() string {
	if e.TLS {
		return "https://" + e.Address
	}
	return "grpc://" + e.Address
}
