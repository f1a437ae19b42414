package keys

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryptinit/cryptinit/tpm"
)

// systemd 252's cryptsetup token plugin takes its TPM only from sysfs: the
// /sys/class/tpmrm entry, opened as /dev/<entry>. pluginOverSwtpm gives it
// one in a private mount namespace (tmpfs over /sys/class and /dev, with
// /dev/tpmrm0 a pseudo terminal), and relays the TPM commands tpm2-tss's
// device TCTI writes to that terminal to the swtpm and the responses back.
// Nothing outside the namespace changes. It runs cryptsetup with args and
// returns its combined output and error.
func pluginOverSwtpm(t *testing.T, sd *sdTPM, args ...string) ([]byte, error) {
	t.Helper()
	cs := needTool(t, "cryptsetup", "cryptsetup-bin")
	unshare := needTool(t, "unshare", "util-linux")
	master, slave, ptsName := openRawPTY(t)
	defer master.Close()
	defer slave.Close()

	conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(sd.port)))
	if err != nil {
		t.Fatalf("connect to swtpm: %v", err)
	}
	tr := tpm.NewStreamTransport(conn)
	defer tr.Close()
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		for {
			hdr := make([]byte, 10)
			if _, err := io.ReadFull(master, hdr); err != nil {
				return
			}
			size := binary.BigEndian.Uint32(hdr[2:6])
			if size < 10 || size > 64<<10 {
				return
			}
			cmd := make([]byte, size)
			copy(cmd, hdr)
			if _, err := io.ReadFull(master, cmd[10:]); err != nil {
				return
			}
			rsp, err := tr.Send(cmd)
			if err != nil {
				return
			}
			if _, err := master.Write(rsp); err != nil {
				return
			}
		}
	}()

	// The plugin opens /dev/<name of the /sys/class/tpmrm entry>: inside the
	// namespace /dev is a tmpfs holding the pseudo terminal as tpmrm0 and
	// the few nodes cryptsetup needs.
	script := fmt.Sprintf(`set -e
mount -t tmpfs cryptinit-test /sys/class
mkdir -p /sys/class/tpmrm/tpmrm0
printf 'MAJOR=136\nMINOR=%[1]s\nDEVNAME=tpmrm0\n' > /sys/class/tpmrm/tpmrm0/uevent
ln -s /sys/class/tpmrm /sys/class/tpmrm/tpmrm0/subsystem
d=%[2]s
touch $d/tpmrm0 && mount --bind /dev/pts/%[1]s $d/tpmrm0
for n in null zero random urandom; do touch $d/$n && mount --bind /dev/$n $d/$n; done
mount -t tmpfs cryptinit-test /dev
for n in tpmrm0 null zero random urandom; do touch /dev/$n && mount --bind $d/$n /dev/$n; done
exec "$0" "$@"`, ptsName, t.TempDir())
	cmd := exec.Command(unshare, append([]string{"-m", "--propagation", "private", "sh", "-c", script, cs}, args...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=debug", "SYSTEMD_LOG_TARGET=console")
	out, err := cmd.CombinedOutput()
	_ = master.Close() // ends the relay
	<-relayDone
	return out, err
}

// openRawPTY opens a pseudo terminal in raw mode (bytes pass unchanged, no
// echo) and returns its master, its slave (kept open so the mode stays) and
// the slave's number under /dev/pts.
func openRawPTY(t *testing.T) (master, slave *os.File, n string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo terminals here: %v", err)
	}
	rc, err := m.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var num int
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		if ferr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ferr == nil {
			num, ferr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	}); err != nil || ferr != nil {
		t.Fatalf("unlockpt/ptsname: %v %v", err, ferr)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", num), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return m, s, strconv.Itoa(num)
}
