package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// Device paths tried by Open: the kernel resource manager first, so that
// transient handles are flushed for us, then the raw device.
const (
	DeviceRM  = "/dev/tpmrm0"
	DeviceRaw = "/dev/tpm0"
)

// Open opens /dev/tpmrm0, or /dev/tpm0 when there is no resource manager.
// It returns an error wrapping ErrNoTPM when neither exists.
func Open() (transport.TPMCloser, error) { return OpenDevice(DeviceRM, DeviceRaw) }

// OpenDevice opens the first of paths that exists. A path that exists but
// fails to open is an error at once (permissions, busy /dev/tpm0).
func OpenDevice(paths ...string) (transport.TPMCloser, error) {
	var errs []error
	for _, p := range paths {
		t, err := linuxtpm.Open(p)
		if err == nil {
			return Serialize(t), nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", p, err))
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open TPM: %w", errors.Join(errs...))
		}
	}
	return nil, fmt.Errorf("open TPM: %w: %w", ErrNoTPM, errors.Join(errs...))
}

// tpmHeaderSize is the size of a TPM 2.0 response header: tag (2), size (4), code (4).
const tpmHeaderSize = 10

// maxResponse bounds a response so a broken peer cannot make us allocate
// without limit.
const maxResponse = 64 << 10

// streamTPM speaks raw TPM 2.0 commands over a byte stream (swtpm's TCP data
// port, a socket): it reads the header to know how long a response is, so a
// short Read from the stream never truncates it.
type streamTPM struct {
	mu sync.Mutex
	rw io.ReadWriteCloser
}

// NewStreamTransport wraps a stream that carries raw TPM commands and
// responses (no simulator framing), such as swtpm's TCP data port.
func NewStreamTransport(rw io.ReadWriteCloser) transport.TPMCloser {
	return &streamTPM{rw: rw}
}

// Send writes one command and reads exactly one response.
func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.rw.Write(cmd); err != nil {
		return nil, fmt.Errorf("tpm stream write: %w", err)
	}
	hdr := make([]byte, tpmHeaderSize)
	if _, err := io.ReadFull(s.rw, hdr); err != nil {
		return nil, fmt.Errorf("tpm stream read header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < tpmHeaderSize || size > maxResponse {
		return nil, fmt.Errorf("tpm stream: bad response size %d", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.rw, rsp[tpmHeaderSize:]); err != nil {
		return nil, fmt.Errorf("tpm stream read body: %w", err)
	}
	return rsp, nil
}

// Close closes the underlying stream.
func (s *streamTPM) Close() error { return s.rw.Close() }

// lockedTPM makes Send atomic: the kernel accepts one outstanding command
// per open file, and boot may measure while unlock unseals.
type lockedTPM struct {
	mu sync.Mutex
	t  transport.TPMCloser
}

// Serialize returns t with Send calls serialized, so that goroutines sharing
// one TPM connection never interleave a command and its response.
func Serialize(t transport.TPMCloser) transport.TPMCloser { return &lockedTPM{t: t} }

func (l *lockedTPM) Send(cmd []byte) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t.Send(cmd)
}

func (l *lockedTPM) Close() error { return l.t.Close() }
