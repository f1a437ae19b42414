package dmcrypt

import (
	"fmt"
	"runtime"

	devmapper "github.com/anatol/devmapper.go"
	"golang.org/x/sys/unix"
)

// Mapper creates dm-crypt mappings through /dev/mapper/control.
type Mapper struct {
	Nodes Nodes
}

// Map creates the mapping, makes its node and returns the node's path.
//
// The key goes to dm-crypt through the kernel keyring (a logon key in this
// thread's keyring, unlinked right after the table load), so it never sits
// hex-encoded in Go strings; kernels without keyring support get the hex
// table instead. The caller zeroes spec.Key.
func (m Mapper) Map(spec Spec) (string, error) {
	if len(spec.Key) == 0 {
		return "", fmt.Errorf("map %s: empty volume key", spec.Name)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	table := devmapper.CryptTable{
		Length:        spec.Size,
		BackendDevice: spec.Backing,
		BackendOffset: spec.Offset,
		Encryption:    spec.Cipher,
		IVTweak:       spec.IVTweak,
		Flags:         spec.Flags,
		SectorSize:    spec.SectorSize,
	}
	desc := "cryptinit:" + spec.UUID
	id, err := unix.AddKey("logon", desc, spec.Key, unix.KEY_SPEC_THREAD_KEYRING)
	if err == nil {
		table.KeyID = fmt.Sprintf(":%d:logon:%s", len(spec.Key), desc)
		defer unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_THREAD_KEYRING, 0, 0)
		defer unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0)
	} else {
		table.Key = spec.Key
	}
	err = devmapper.CreateAndLoad(spec.Name, spec.UUID, 0, table)
	if err != nil && table.KeyID != "" {
		// dm-crypt without keyring support: pass the key in the table.
		keyringErr := err
		table.KeyID, table.Key = "", spec.Key
		if err = devmapper.CreateAndLoad(spec.Name, spec.UUID, 0, table); err != nil {
			err = fmt.Errorf("%w (with a keyring key: %v)", err, keyringErr)
		}
	}
	if err != nil {
		return "", fmt.Errorf("map %s on %s (%s, %d bytes at %d): %w", spec.Name, spec.Backing, spec.Cipher, spec.Size, spec.Offset, err)
	}
	path, err := m.Nodes.MakeNode(spec.Name)
	if err != nil {
		devmapper.Remove(spec.Name)
		return "", fmt.Errorf("map %s: %w", spec.Name, err)
	}
	return path, nil
}

// Unmap removes a mapping and its /dev/mapper node (after a failure, before
// a debug shell). The mapping must not be mounted.
func (m Mapper) Unmap(name string) error {
	if err := devmapper.Remove(name); err != nil {
		return fmt.Errorf("remove mapping %s: %w", name, err)
	}
	return m.Nodes.RemoveNode(name)
}
