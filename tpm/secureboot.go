package tpm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// EFIVarsPath is where efivarfs is mounted; the init mounts it before asking.
const EFIVarsPath = "/sys/firmware/efi/efivars"

// GlobalVariableGUID is EFI_GLOBAL_VARIABLE, the vendor of SecureBoot and SetupMode.
const GlobalVariableGUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// SecureBootState is what the firmware reports about Secure Boot.
type SecureBootState struct {
	SecureBoot bool // SecureBoot variable is 1: images are verified
	SetupMode  bool // SetupMode variable is 1: no PK enrolled, anyone may enroll keys
}

// Enabled reports whether Secure Boot actually protects this boot: on, and
// not in setup mode.
func (s SecureBootState) Enabled() bool { return s.SecureBoot && !s.SetupMode }

func (s SecureBootState) String() string {
	return fmt.Sprintf("SecureBoot=%d SetupMode=%d", b2i(s.SecureBoot), b2i(s.SetupMode))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ReadSecureBootState reads SecureBoot and SetupMode from efivarfs mounted
// at root (EFIVarsPath; tests pass a directory). A missing variable reads as
// 0 (firmware without Secure Boot support); a missing root is an error, since
// then we cannot tell.
func ReadSecureBootState(root string) (SecureBootState, error) {
	if _, err := os.Stat(root); err != nil {
		return SecureBootState{}, fmt.Errorf("read Secure Boot state: efivarfs not mounted at %s or not booted via UEFI: %w", root, err)
	}
	sb, err := readEFIBool(root, "SecureBoot")
	if err != nil {
		return SecureBootState{}, err
	}
	setup, err := readEFIBool(root, "SetupMode")
	if err != nil {
		return SecureBootState{}, err
	}
	return SecureBootState{SecureBoot: sb, SetupMode: setup}, nil
}

// readEFIBool reads a one-byte global EFI variable: efivarfs files start with
// the 4-byte little-endian attributes, then the value.
func readEFIBool(root, name string) (bool, error) {
	p := filepath.Join(root, name+"-"+GlobalVariableGUID)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read EFI variable %s: %w", name, err)
	}
	if len(data) != 5 {
		return false, fmt.Errorf("EFI variable %s: %d bytes, want 4 attribute bytes and 1 value byte", name, len(data))
	}
	switch data[4] {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, fmt.Errorf("EFI variable %s: value %d, want 0 or 1", name, data[4])
}

// RequireSecureBoot returns nil only when Secure Boot is enabled and not in
// setup mode. Enrolling a TPM key otherwise would seal it to a PCR 7 that any
// unsigned boot chain can reproduce (TPMCheckSecurebootStatusOnEnroll).
func RequireSecureBoot(root string) error {
	st, err := ReadSecureBootState(root)
	if err != nil {
		return fmt.Errorf("refusing to enroll a TPM key: %w", err)
	}
	if !st.Enabled() {
		return fmt.Errorf("refusing to enroll a TPM key: %s; enable Secure Boot with enrolled keys, "+
			"or set checkSecurebootStatusOnEnroll: false to accept a PCR 7 without Secure Boot: %w", st, ErrSecureBootOff)
	}
	return nil
}

// EFIVars reads the Secure Boot state from efivarfs mounted at Root
// (EFIVarsPath when empty). It satisfies unlock/keys' SecureBoot interface.
type EFIVars struct{ Root string }

// SecureBootEnabled reports whether Secure Boot is on and not in setup mode.
func (e EFIVars) SecureBootEnabled(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	root := e.Root
	if root == "" {
		root = EFIVarsPath
	}
	st, err := ReadSecureBootState(root)
	if err != nil {
		return false, err
	}
	return st.Enabled(), nil
}
