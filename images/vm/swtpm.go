package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// SWTPM is a software TPM 2.0 serving one QEMU over a unix socket. Its state
// directory outlives a single boot, so a node keeps its TPM across reboots.
type SWTPM struct {
	StateDir string
	Socket   string
	cmd      *exec.Cmd
	done     chan error
}

// NewTPMState makes an empty TPM state directory under dir.
func NewTPMState(dir string) (string, error) {
	d := filepath.Join(dir, "tpm")
	return d, os.MkdirAll(d, 0o700)
}

// StartSWTPM starts swtpm on stateDir; Stop ends it. swtpm exits by itself
// when QEMU closes the control channel at shutdown, so each boot starts one.
func StartSWTPM(stateDir string) (*SWTPM, error) {
	sock := filepath.Join(stateDir, "swtpm.sock")
	os.Remove(sock)
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+stateDir,
		"--ctrl", "type=unixio,path="+sock,
		"--flags", "startup-clear",
		"--log", "file="+filepath.Join(stateDir, "swtpm.log")+",level=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vm: start swtpm: %w", err)
	}
	s := &SWTPM{StateDir: stateDir, Socket: sock, cmd: cmd, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return s, nil
		}
		select {
		case err := <-s.done:
			return nil, fmt.Errorf("vm: swtpm exited before creating %s: %v", sock, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("vm: swtpm did not create %s within 10 s", sock)
		}
	}
}

// QEMUArgs are the QEMU options that attach this TPM as a TIS device.
func (s *SWTPM) QEMUArgs() []string {
	return []string{
		"-chardev", "socket,id=chrtpm,path=" + s.Socket,
		"-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
		"-device", "tpm-tis,tpmdev=tpm0",
	}
}

// Stop kills swtpm (its whole process group) and waits for it.
func (s *SWTPM) Stop() {
	if s == nil || s.cmd.Process == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
	}
}
