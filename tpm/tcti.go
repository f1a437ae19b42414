package tpm

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// Device names a TPM the way tpm2-tss's TCTI strings and
// systemd-cryptenroll's --tpm2-device do: a character device path
// ("/dev/tpmrm0", also "device:/dev/tpmrm0"), or a software TPM's TCP
// command port ("swtpm:host=H,port=P"; host defaults to 127.0.0.1, port to
// 2321). swtpm's control (platform) port is the command port plus one.
type Device struct {
	Path string // character device; "" for swtpm
	Host string // swtpm host
	Port int    // swtpm command port
	// CommandTimeout bounds each command to a swtpm, from sending it to
	// its full response, so a swtpm that accepts and never answers fails
	// instead of hanging; zero means DefaultSwtpmCommandTimeout.
	CommandTimeout time.Duration
}

// DefaultSwtpmCommandTimeout is generous: on a software TPM creating a
// key (RSA above all) can take many seconds on a loaded machine.
const DefaultSwtpmCommandTimeout = 2 * time.Minute

// DefaultSwtpmPort is tpm2-tss's default swtpm command port.
const DefaultSwtpmPort = 2321

// ParseDevice parses a TPM device spec. "" means the default devices
// (/dev/tpmrm0, then /dev/tpm0) and returns the zero Device.
func ParseDevice(spec string) (Device, error) {
	switch {
	case spec == "":
		return Device{}, nil
	case strings.HasPrefix(spec, "device:"):
		p := strings.TrimPrefix(spec, "device:")
		if p == "" {
			return Device{}, fmt.Errorf("tpm device %q: no path", spec)
		}
		return Device{Path: p}, nil
	case strings.HasPrefix(spec, "swtpm:") || spec == "swtpm":
		d := Device{Host: "127.0.0.1", Port: DefaultSwtpmPort}
		conf := strings.TrimPrefix(strings.TrimPrefix(spec, "swtpm"), ":")
		if conf == "" {
			return d, nil
		}
		for _, kv := range strings.Split(conf, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || v == "" {
				return Device{}, fmt.Errorf("tpm device %q: %q is not key=value (want swtpm:host=H,port=P)", spec, kv)
			}
			switch k {
			case "host":
				d.Host = strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")
			case "port":
				p, err := strconv.Atoi(v)
				if err != nil || p < 1 || p > 65534 {
					return Device{}, fmt.Errorf("tpm device %q: port %q is not 1..65534 (the control port is port+1)", spec, v)
				}
				d.Port = p
			default:
				return Device{}, fmt.Errorf("tpm device %q: unknown key %q (want host and port)", spec, k)
			}
		}
		return d, nil
	case strings.HasPrefix(spec, "/"):
		return Device{Path: spec}, nil
	}
	return Device{}, fmt.Errorf("tpm device %q: want a device path (/dev/tpmrm0) or swtpm:host=H,port=P", spec)
}

func (d Device) String() string {
	switch {
	case d.Path != "":
		return d.Path
	case d.Port != 0:
		return fmt.Sprintf("swtpm:host=%s,port=%d", d.Host, d.Port)
	}
	return DeviceRM + " or " + DeviceRaw
}

// OpenSpec parses spec (see ParseDevice) and opens that TPM. A device that
// does not exist, or a swtpm port nobody listens on, is ErrNoTPM.
func OpenSpec(spec string) (transport.TPMCloser, error) {
	d, err := ParseDevice(spec)
	if err != nil {
		return nil, err
	}
	return d.Open()
}

// Open opens the TPM d names. A freshly started swtpm is powered on through
// its control port and started (TPM2_Startup(CLEAR)); a running one is
// used as it is, its PCRs untouched.
func (d Device) Open() (transport.TPMCloser, error) {
	return d.OpenContext(context.Background())
}

// OpenContext is Open for a caller with a context: for a swtpm, the
// connection is closed when ctx ends, which fails the command in flight
// and every later one (TPM commands themselves take no context).
func (d Device) OpenContext(ctx context.Context) (transport.TPMCloser, error) {
	switch {
	case d.Path != "":
		return OpenDevice(d.Path)
	case d.Port != 0:
		timeout := d.CommandTimeout
		if timeout <= 0 {
			timeout = DefaultSwtpmCommandTimeout
		}
		return openSwtpm(ctx, d.Host, d.Port, timeout)
	}
	return Open()
}

// swtpmDialTimeout bounds connecting to a swtpm port.
const swtpmDialTimeout = 5 * time.Second

// TPM response codes the swtpm start-up sequence looks at.
const (
	rcInitialize = 0x100 // TPM_RC_INITIALIZE: powered on, TPM2_Startup not yet run
	rcFailure    = 0x101 // TPM_RC_FAILURE: swtpm not powered on (no CMD_INIT yet)
)

// swtpm control channel command (swtpm's ptm CMD_INIT), big-endian.
const swtpmCmdInit = 2

func openSwtpm(ctx context.Context, host string, port int, timeout time.Duration) (transport.TPMCloser, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	conn, err := (&net.Dialer{Timeout: swtpmDialTimeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("open TPM swtpm:host=%s,port=%d: %w: %v", host, port, ErrNoTPM, err)
	}
	dc := &deadlineConn{Conn: conn, timeout: timeout}
	dc.stop = context.AfterFunc(ctx, func() { conn.Close() })
	t := NewStreamTransport(dc)
	if err := swtpmStart(t, host, port); err != nil {
		t.Close()
		return nil, fmt.Errorf("open TPM swtpm:host=%s,port=%d: %w", host, port, err)
	}
	return Serialize(t), nil
}

// deadlineConn gives each TPM command on a swtpm connection a deadline:
// a command starts with a Write, and its response must be complete within
// timeout of it.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
	stop    func() bool // stops closing the connection when the context ends
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *deadlineConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// swtpmStart makes sure the swtpm behind t is powered on and started:
// a TPM that answers a capability query is left alone; one that is not
// powered on gets CMD_INIT on the control port (port+1), then Startup.
func swtpmStart(t transport.TPM, host string, port int) error {
	rc, err := rawRC(t, cmdGetCapability)
	if err != nil {
		return err
	}
	switch rc {
	case 0:
		return nil
	case rcFailure:
		if err := swtpmPowerOn(host, port+1); err != nil {
			return err
		}
	case rcInitialize:
	default:
		return fmt.Errorf("TPM answered a capability query with 0x%x", rc)
	}
	rc, err = rawRC(t, cmdStartupClear)
	if err != nil {
		return fmt.Errorf("TPM2_Startup: %w", err)
	}
	if rc != 0 && rc != rcInitialize {
		return fmt.Errorf("TPM2_Startup(CLEAR) failed: 0x%x", rc)
	}
	return nil
}

// Raw commands of the start-up probe: TPM2_GetCapability(TPM_PROPERTIES,
// TPM_PT_FAMILY_INDICATOR, 1) and TPM2_Startup(TPM_SU_CLEAR).
var (
	cmdGetCapability = []byte{0x80, 0x01, 0, 0, 0, 0x16, 0, 0, 0x01, 0x7a, 0, 0, 0, 0x06, 0, 0, 0x01, 0, 0, 0, 0, 0x01}
	cmdStartupClear  = []byte{0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x44, 0, 0}
)

func rawRC(t transport.TPM, cmd []byte) (uint32, error) {
	rsp, err := t.Send(cmd)
	if err != nil {
		return 0, err
	}
	if len(rsp) < tpmHeaderSize {
		return 0, fmt.Errorf("short TPM response (%d bytes)", len(rsp))
	}
	return binary.BigEndian.Uint32(rsp[6:10]), nil
}

// swtpmPowerOn sends CMD_INIT (no flags) to swtpm's control port.
func swtpmPowerOn(host string, ctrlPort int) error {
	addr := net.JoinHostPort(host, strconv.Itoa(ctrlPort))
	c, err := net.DialTimeout("tcp", addr, swtpmDialTimeout)
	if err != nil {
		return fmt.Errorf("swtpm is not powered on and its control port %s does not answer: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(swtpmDialTimeout))
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], swtpmCmdInit)
	if _, err := c.Write(req[:]); err != nil {
		return fmt.Errorf("swtpm control port %s: %w", addr, err)
	}
	var res [4]byte
	if _, err := io.ReadFull(c, res[:]); err != nil {
		return fmt.Errorf("swtpm control port %s: %w", addr, err)
	}
	if r := binary.BigEndian.Uint32(res[:]); r != 0 {
		return fmt.Errorf("swtpm control port %s: power-on (CMD_INIT) failed: 0x%x", addr, r)
	}
	return nil
}
