package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/boot/cmdline"
	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/boot/dmcrypt"
	"github.com/cryptinit/cryptinit/boot/timeline"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
	"golang.org/x/sys/unix"
)

// A cheap KDF keeps these tests fast on a shared 2-core machine.
const cheapKDF = "  kdf: {type: pbkdf2, iterations: 1000}\n"

const testUUID = "6b3c5e0a-9d21-4f7e-8c44-2a1f9b7d0e53"

func volumeDoc(kind, name, keys string) string {
	return "apiVersion: v1alpha1\nkind: " + kind + "\nname: " + name + "\nencryption:\n  provider: luks2\n  keys:\n" + keys + cheapKDF
}

var basicConfig = strings.Join([]string{
	volumeDoc("VolumeConfig", "STATE", "    - nodeID: {}\n      slot: 0\n"),
	volumeDoc("VolumeConfig", "EPHEMERAL", "    - static:\n        passphrase: eph-pass\n      slot: 0\n      lockToSTATE: true\n"),
	volumeDoc("UserVolumeConfig", "data", "    - static:\n        passphrase: data-pass\n      slot: 0\n"),
}, "---\n")

// node is a fake machine: partitions are files, mappings are files, mounts
// are recorded; the unlock engine and META code are real.
type node struct {
	t     *testing.T
	dir   string // partitions and mapped volumes
	parts map[string]string
	con   bytes.Buffer

	mu      sync.Mutex
	mounts  []call
	mkfs    []string
	mapped  map[string]dmcrypt.Spec
	wantErr error // returned by Devices.Wait
}

type call struct{ source, target, fstype string }

func newNode(t *testing.T, labels map[string]int64) *node {
	n := &node{t: t, dir: t.TempDir(), parts: map[string]string{}, mapped: map[string]dmcrypt.Spec{}}
	for l, size := range labels {
		p := filepath.Join(n.dir, l)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		n.parts[l] = p
	}
	return n
}

func (n *node) Wait(ctx context.Context, required []string, timeout time.Duration) (*devices.Found, error) {
	if n.wantErr != nil {
		return nil, n.wantErr
	}
	f := &devices.Found{ByLabel: map[string]devices.Block{}}
	for l, p := range n.parts {
		f.ByLabel[l] = devices.Block{Name: "vd-" + l, Label: l, Path: p}
	}
	var missing []string
	for _, r := range required {
		if _, ok := f.ByLabel[r]; !ok {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		return f, &devices.NotFoundError{Missing: missing, Waited: timeout}
	}
	return f, nil
}

func (n *node) Map(spec dmcrypt.Spec) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(spec.Key) == 0 {
		return "", errors.New("no key")
	}
	spec.Key = nil // must not be kept
	n.mapped[spec.Name] = spec
	p := filepath.Join(n.dir, spec.Name)
	if _, err := os.Stat(p); err != nil {
		os.WriteFile(p, nil, 0o600)
		os.Truncate(p, 2<<20)
	}
	return p, nil
}

func (n *node) Make(ctx context.Context, fstype, dev, label string) error {
	n.mu.Lock()
	n.mkfs = append(n.mkfs, label+":"+fstype)
	n.mu.Unlock()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteAt([]byte("XFSB"), 0)
	return err
}

func (n *node) Mount(source, target, fstype string, flags uintptr, data string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mounts = append(n.mounts, call{source, target, fstype})
	return nil
}

func (n *node) Unmount(string) error { return nil }

// boot makes a Boot on this node with root as its filesystem root.
func (n *node) boot(root, cfg string, cl string) *Boot {
	n.t.Helper()
	if cfg != "" {
		p := filepath.Join(root, EmbeddedConfig)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			n.t.Fatal(err)
		}
	} else {
		os.Remove(filepath.Join(root, EmbeddedConfig))
	}
	init := filepath.Join(root, NewRoot, "sbin/init")
	os.MkdirAll(filepath.Dir(init), 0o755)
	os.WriteFile(init, nil, 0o755)
	n.con.Reset()
	start := time.Now()
	log := console.NewLogger(start, &n.con, nil)
	return &Boot{
		Root: root, Cmdline: cmdline.Parse("root=PARTLABEL=ROOT rootfstype=ext4 " + cl), Log: log,
		Timeline: timeline.New(start, nil, func(s timeline.Step) { log.Raw(s.Line()) }),
		Devices:  n, Open: openFile, Mapper: n, Mkfs: n, Mounter: n,
		Keys:         keys.Env{NodeUUID: keys.StaticUUID(testUUID)},
		MemAvailable: 1 << 30,
	}
}

func standardParts() map[string]int64 {
	return map[string]int64{"META": meta.Size, "STATE": 20 << 20, "EPHEMERAL": 20 << 20, "u-data": 20 << 20, "ROOT": 1 << 20}
}

func TestFirstAndSecondBoot(t *testing.T) {
	n := newNode(t, standardParts())
	root := t.TempDir()
	b := n.boot(root, basicConfig, "")
	res, err := b.Run(context.Background())
	if err != nil {
		t.Fatalf("first boot: %v\n%s", err, n.con.String())
	}
	if res.Root != NewRoot || res.Init != "/sbin/init" {
		t.Errorf("result %+v", res)
	}
	// STATE is mounted before any other volume; the root after all of them;
	// then the moves, shallowest first (/var before /var/mnt/data).
	var order []string
	for _, c := range n.mounts {
		order = append(order, strings.TrimPrefix(c.target, root)+"<"+filepath.Base(c.source))
	}
	got := strings.Join(order, " ")
	if !strings.HasPrefix(got, "/cryptinit/mnt/STATE<luks2-STATE ") {
		t.Errorf("STATE not mounted first: %s", got)
	}
	if !strings.Contains(got, " /sysroot<ROOT /sysroot/var<EPHEMERAL /sysroot/system/state<STATE /sysroot/var/mnt/data<u-data") {
		t.Errorf("root and moves out of order: %s", got)
	}
	if len(n.mkfs) != 3 {
		t.Errorf("mkfs ran %v, want 3 fresh volumes", n.mkfs)
	}
	for _, name := range []string{"luks2-STATE", "luks2-EPHEMERAL", "luks2-u-data"} {
		s, ok := n.mapped[name]
		if !ok || s.Offset != 16<<20 || s.Size != 4<<20 || !strings.HasSuffix(s.UUID, "-"+name) {
			t.Errorf("mapping %s = %+v", name, s)
		}
	}
	// META now carries STATE's config; STATE has the salt and the config copy.
	mf, _ := os.Open(n.parts["META"])
	m, err := meta.Read(mf)
	mf.Close()
	if err != nil {
		t.Fatalf("META: %v", err)
	}
	if _, ok := m.Get(meta.TagStateEncryptionConfig); !ok {
		t.Error("META tag 9 not written")
	}
	stateDir := filepath.Join(root, StagingDir, "STATE")
	if _, err := os.Stat(filepath.Join(stateDir, keys.SaltFile)); err != nil {
		t.Errorf("no salt on STATE: %v", err)
	}
	if c, err := os.ReadFile(filepath.Join(stateDir, "cryptinit/config.yaml")); err != nil || string(c) != basicConfig {
		t.Errorf("config copy on STATE: %v", err)
	}
	if err := b.WriteTimeline(); err != nil {
		t.Fatal(err)
	}
	tl, _ := os.ReadFile(filepath.Join(root, TimelineFile))
	for _, step := range []string{`"step": "devices"`, `"step": "meta"`, `"step": "key"`, `"step": "dm-setup"`, `"step": "mkfs"`, `"step": "move-mounts"`} {
		if !bytes.Contains(tl, []byte(step)) {
			t.Errorf("timeline lacks %s", step)
		}
	}
	if strings.Contains(n.con.String(), "eph-pass") || strings.Contains(n.con.String(), testUUID) {
		t.Error("a secret was logged")
	}

	// Second boot without any machine config: STATE from META, the others
	// from the copy on STATE; nothing is formatted again.
	n.mounts, n.mkfs = nil, nil
	b = n.boot(root, "", "")
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("second boot: %v\n%s", err, n.con.String())
	}
	if len(n.mkfs) != 0 {
		t.Errorf("second boot made filesystems: %v", n.mkfs)
	}
	out := n.con.String()
	for _, want := range []string{"STATE encryption config from META", "copy on STATE", "EPHEMERAL: opened with slot 0", "u-data: opened with slot 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("second boot log lacks %q:\n%s", want, out)
		}
	}
}

func TestWrongKeyBannerAndPrompt(t *testing.T) {
	n := newNode(t, standardParts())
	root := t.TempDir()
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("first boot: %v\n%s", err, n.con.String())
	}
	wrong := strings.Replace(basicConfig, "data-pass", "not-the-pass", 1)

	// No console: a banner naming u-data and its slot, no prompt.
	b := n.boot(root, wrong, "")
	_, err := b.Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) {
		t.Fatalf("got %v, want *Fatal", err)
	}
	if f.Failure.Volume != "u-data" || !errors.Is(f.Failure.Reason, unlock.ErrNoKeyOpens) || len(f.Failure.Slots) != 1 || f.Failure.Slots[0].Slot != 0 {
		t.Errorf("failure %+v", f.Failure)
	}
	banner := strings.Join(f.Failure.Banner("10s", false), "\n")
	if !strings.Contains(banner, "FAIL u-data") || !strings.Contains(banner, "slot 0 (static)") || !strings.Contains(banner, "recovery passphrase") {
		t.Errorf("banner:\n%s", banner)
	}

	// A console: the second typed passphrase opens it.
	b = n.boot(root, wrong, "")
	p := &fakePrompt{answers: []string{"nope", "data-pass"}}
	b.Prompt = p
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("prompted boot: %v\n%s", err, n.con.String())
	}
	if p.asked != 2 || !strings.Contains(n.con.String(), "u-data: opened with slot 0 (console passphrase)") {
		t.Errorf("asked %d times; log:\n%s", p.asked, n.con.String())
	}

	// Nobody types: the prompt times out and the banner lists the try.
	b = n.boot(root, wrong, "")
	b.Prompt = &fakePrompt{}
	_, err = b.Run(context.Background())
	if !errors.As(err, &f) || len(f.Failure.Slots) != 2 || f.Failure.Slots[1].Kind != "console passphrase" {
		t.Errorf("timeout: %v %+v", err, f)
	}
	// cryptinit.prompt-timeout=0 disables the prompt.
	b = n.boot(root, wrong, "cryptinit.prompt-timeout=0")
	p = &fakePrompt{answers: []string{"data-pass"}}
	b.Prompt = p
	if _, err := b.Run(context.Background()); err == nil || p.asked != 0 {
		t.Errorf("prompt-timeout=0: err %v, asked %d", err, p.asked)
	}

	// After a typed passphrase the configured keys are synced: a config
	// naming an empty slot gets it enrolled, and the next boot opens
	// without asking (sync never touches the typed slot 0).
	extra := strings.Replace(basicConfig, "passphrase: data-pass\n      slot: 0\n", "passphrase: data-pass\n      slot: 0\n    - static:\n        passphrase: second-key\n      slot: 3\n", 1)
	extraWrong := strings.Replace(extra, "data-pass", "not-the-pass", 1)
	b = n.boot(root, extraWrong, "")
	b.Prompt = &fakePrompt{answers: []string{"data-pass"}}
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("prompted boot with an empty configured slot: %v\n%s", err, n.con.String())
	}
	if !strings.Contains(n.con.String(), "u-data: key slots after the typed passphrase") {
		t.Errorf("no sync after the prompt:\n%s", n.con.String())
	}
	b = n.boot(root, extraWrong, "")
	p = &fakePrompt{}
	b.Prompt = p
	if _, err := b.Run(context.Background()); err != nil || p.asked != 0 {
		t.Errorf("after the sync slot 3 should open without a prompt: %v, asked %d\n%s", err, p.asked, n.con.String())
	}

}

type fakePrompt struct {
	mu      sync.Mutex
	answers []string
	asked   int
}

func (p *fakePrompt) Passphrase(volume string, try, tries int) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.asked >= len(p.answers) {
		return nil, console.ErrPromptTimeout
	}
	p.asked++
	return []byte(p.answers[p.asked-1]), nil
}

// TestLockedToWipedState: EPHEMERAL is locked to STATE; once STATE is
// wiped (and formatted again with a new salt), EPHEMERAL must not open and
// the banner's first line says which lockToSTATE slot failed.
func TestLockedToWipedState(t *testing.T) {
	n := newNode(t, standardParts())
	root := t.TempDir()
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("first boot: %v\n%s", err, n.con.String())
	}
	os.Truncate(n.parts["STATE"], 0)
	os.Truncate(n.parts["STATE"], 20<<20)
	os.Remove(filepath.Join(n.dir, "luks2-STATE"))
	os.RemoveAll(filepath.Join(root, StagingDir, "STATE")) // the old STATE contents are gone
	_, err := n.boot(root, basicConfig, "").Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) || f.Failure.Volume != "EPHEMERAL" {
		t.Fatalf("got %v\n%s", err, n.con.String())
	}
	first := f.Failure.Banner("1s", false)[0]
	if !strings.Contains(first, "EPHEMERAL") || !strings.Contains(first, "lockToSTATE") {
		t.Errorf("banner first line %q", first)
	}
	if !strings.Contains(n.con.String(), "STATE: formatted") {
		t.Errorf("the wiped STATE was not formatted again:\n%s", n.con.String())
	}
}

// TestStagedWipe: a wipe request in META for EPHEMERAL is consumed (and
// cleared) on the next boot, which formats EPHEMERAL again; the other
// volumes keep their contents.
func TestStagedWipe(t *testing.T) {
	n := newNode(t, standardParts())
	root := t.TempDir()
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("first boot: %v\n%s", err, n.con.String())
	}
	mf, _ := os.OpenFile(n.parts["META"], os.O_RDWR, 0)
	m, err := meta.Read(mf)
	if err != nil {
		t.Fatal(err)
	}
	if err := meta.RequestWipe(m, meta.WipeRequest{Volume: "EPHEMERAL", LUKSUUID: luksUUID(t, n.parts["EPHEMERAL"])}); err != nil {
		t.Fatal(err)
	}
	if err := m.Write(mf); err != nil {
		t.Fatal(err)
	}
	mf.Close()
	n.mkfs = nil
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("second boot: %v\n%s", err, n.con.String())
	}
	if strings.Join(n.mkfs, ",") != "EPHEMERAL:xfs" {
		t.Errorf("mkfs %v, want EPHEMERAL only", n.mkfs)
	}
	if !strings.Contains(n.con.String(), "wiped EPHEMERAL") {
		t.Errorf("wipe not logged:\n%s", n.con.String())
	}
	mf, _ = os.Open(n.parts["META"])
	m, _ = meta.Read(mf)
	mf.Close()
	if w, err := meta.WipeRequests(m); len(w) != 0 || err != nil {
		t.Errorf("wipe request not cleared: %v", w)
	}
}

func TestNeverFormatsData(t *testing.T) {
	n := newNode(t, standardParts())
	f, _ := os.OpenFile(n.parts["EPHEMERAL"], os.O_WRONLY, 0)
	f.WriteAt([]byte("XFSB"), 0)
	f.Close()
	_, err := n.boot(t.TempDir(), basicConfig, "").Run(context.Background())
	var fe *Fatal
	if !errors.As(err, &fe) {
		t.Fatalf("got %v", err)
	}
	all := fe.Failures()
	if len(all) != 1 || all[0].Volume != "EPHEMERAL" || !strings.Contains(all[0].Reason.Error(), "xfs") || !strings.Contains(all[0].Hint, "never formats") {
		t.Errorf("failures %+v", all)
	}
	b := make([]byte, 4)
	f, _ = os.Open(n.parts["EPHEMERAL"])
	f.ReadAt(b, 0)
	f.Close()
	if string(b) != "XFSB" {
		t.Error("EPHEMERAL was overwritten")
	}
}

func TestPlainVolumesAndLUKSWithoutConfig(t *testing.T) {
	n := newNode(t, standardParts())
	root := t.TempDir()
	b := n.boot(root, "", "")
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, n.con.String())
	}
	// No config: STATE and EPHEMERAL are plain xfs; u-data is not ours.
	if strings.Join(n.mkfs, ",") != "STATE:xfs,EPHEMERAL:xfs" {
		t.Errorf("mkfs %v", n.mkfs)
	}
	if len(n.mapped) != 0 {
		t.Errorf("mapped %v without encryption config", n.mapped)
	}
	// A LUKS header where no config encrypts the volume stops the boot.
	n2 := newNode(t, standardParts())
	dev, _ := os.OpenFile(n2.parts["EPHEMERAL"], os.O_RDWR, 0)
	if _, err := luks2.Format(dev, 20<<20, []byte("x"), luks2.FormatOptions{KDF: luks2.KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}}); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	_, err := n2.boot(t.TempDir(), "", "").Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no config encrypts EPHEMERAL") {
		t.Errorf("got %v", err)
	}
}

func TestDevicesMissing(t *testing.T) {
	n := newNode(t, map[string]int64{"ROOT": 1 << 20})
	_, err := n.boot(t.TempDir(), basicConfig, "").Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) || !strings.Contains(f.Failure.Hint, "GPT partition names") || !strings.Contains(err.Error(), "STATE") {
		t.Fatalf("got %v", err)
	}
}

func TestBadConfigStops(t *testing.T) {
	n := newNode(t, standardParts())
	_, err := n.boot(t.TempDir(), "kind: VolumeConfig\nname: STATE\nencryption:\n  keys:\n    - slot: 0\n", "").Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) || !strings.Contains(f.Failure.Hint, "fix the machine config") {
		t.Fatalf("got %v", err)
	}
	if len(n.mounts) != 0 {
		t.Errorf("mounted with a bad config: %v", n.mounts)
	}
}

func TestConfigPrecedence(t *testing.T) {
	n := newNode(t, standardParts())
	root := t.TempDir()
	onlyState := volumeDoc("VolumeConfig", "STATE", "    - nodeID: {}\n      slot: 0\n")
	os.WriteFile(filepath.Join(root, "other.yaml"), []byte(onlyState), 0o600)

	// cryptinit.config= beats the embedded config.
	b := n.boot(root, basicConfig, "cryptinit.config=/other.yaml")
	mc, err := b.loadMachineConfig(context.Background())
	if err != nil || mc.source != SourceCmdline+"/other.yaml" || len(mc.cfg.Volumes) != 1 {
		t.Fatalf("cmdline source: %v %+v", err, mc)
	}
	// An unreadable one falls back to the embedded config.
	b = n.boot(root, basicConfig, "cryptinit.config=/missing.yaml")
	mc, err = b.loadMachineConfig(context.Background())
	if err != nil || mc.source != SourceEmbedded || len(mc.cfg.Volumes) != 3 {
		t.Fatalf("fallback: %v %+v", err, mc)
	}
	if !strings.Contains(n.con.String(), "cryptinit.config=/missing.yaml not read") {
		t.Errorf("fallback not logged:\n%s", n.con.String())
	}
	// A device source is mounted read-only and read.
	b = n.boot(root, "", "cryptinit.config=PARTLABEL=ESP:/cryptinit/config.yaml")
	n.parts["ESP"] = n.parts["ROOT"]
	os.MkdirAll(filepath.Join(root, ConfigSrcDir, "cryptinit"), 0o755)
	os.WriteFile(filepath.Join(root, ConfigSrcDir, "cryptinit/config.yaml"), []byte(onlyState), 0o600)
	f, _ := os.OpenFile(n.parts["ESP"], os.O_WRONLY, 0)
	f.WriteAt([]byte("XFSB"), 0) // stands in for the ESP's filesystem
	f.Close()
	n.mounts = nil
	mc, err = b.loadMachineConfig(context.Background())
	if err != nil || !strings.HasPrefix(mc.source, SourceCmdline+"PARTLABEL=ESP") {
		t.Fatalf("device source: %v %+v\n%s", err, mc, n.con.String())
	}
	if len(n.mounts) != 1 || n.mounts[0].source != n.parts["ESP"] || n.mounts[0].fstype != "xfs" {
		t.Errorf("mounts %+v", n.mounts)
	}
}

func TestParseConfigSpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ConfigSpec
		ok   bool
	}{
		{"/etc/x.yaml", ConfigSpec{Path: "/etc/x.yaml"}, true},
		{"PARTLABEL=ESP:/cryptinit/config.yaml", ConfigSpec{Device: "PARTLABEL=ESP", Path: "/cryptinit/config.yaml"}, true},
		{"/dev/vda1:/c.yaml", ConfigSpec{Device: "/dev/vda1", Path: "/c.yaml"}, true},
		{"/dev/vda1", ConfigSpec{}, false},
		{"UUID=1f2e-3d4c:/c.yaml", ConfigSpec{Device: "UUID=1f2e-3d4c", Path: "/c.yaml"}, true},
		{"PARTUUID=C0FFEE00-0000-4000-8000-000000000001:/c.yaml", ConfigSpec{Device: "PARTUUID=C0FFEE00-0000-4000-8000-000000000001", Path: "/c.yaml"}, true},
		{"UUID=:/c.yaml", ConfigSpec{}, false},
		{"LABEL=ESP:/c.yaml", ConfigSpec{}, false},
		{"relative.yaml", ConfigSpec{}, false},
	} {
		got, err := ParseConfigSpec(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseConfigSpec(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestDefaultMountPoint(t *testing.T) {
	for id, want := range map[string]string{"STATE": "/system/state", "EPHEMERAL": "/var", "u-data": "/var/mnt/data"} {
		if got := DefaultMountPoint(id); got != want {
			t.Errorf("%s: %s", id, got)
		}
	}
}

// concurrencyUnlocker tracks how much KDF memory is in use at once.
type concurrencyUnlocker struct {
	mu          sync.Mutex
	inUse, peak int
	running     int
	peakRunning int
}

func (c *concurrencyUnlocker) Unlock(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*unlock.Result, error) {
	c.mu.Lock()
	c.running++
	if c.running > c.peakRunning {
		c.peakRunning = c.running
	}
	c.mu.Unlock()
	time.Sleep(30 * time.Millisecond)
	c.mu.Lock()
	c.running--
	c.mu.Unlock()
	return &unlock.Result{VolumeID: vol.ID, UUID: "u", VolumeKey: make([]byte, 64), Formatted: true, Kind: "static",
		Mapping: luks2.Mapping{Cipher: "aes-xts-plain64", KeySize: 64, Offset: 16 << 20, Dynamic: true, SectorSize: 512}}, nil
}

func TestConcurrencyWithinMemory(t *testing.T) {
	cfg := func(mem string) string {
		kdf := "  kdf: {type: argon2id, memoryKiB: " + mem + ", iterations: 1, parallelism: 1}\n"
		var docs []string
		for _, name := range []string{"a", "b", "c", "d"} {
			docs = append(docs, strings.Replace(volumeDoc("UserVolumeConfig", name, "    - static:\n        passphrase: p\n      slot: 0\n"), cheapKDF, kdf, 1))
		}
		return strings.Join(docs, "---\n")
	}
	for _, tc := range []struct {
		name     string
		mem      int64
		kdfKiB   string
		wantPeak int
	}{
		{"room for one", 48 << 20, "32768", 1},
		{"room for two", 80 << 20, "32768", 2},
		{"room for all", 1 << 30, "32768", 4},
		{"bigger than the machine still runs, alone", 16 << 20, "65536", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := map[string]int64{"STATE": 20 << 20, "ROOT": 1 << 20}
			for _, name := range []string{"a", "b", "c", "d"} {
				parts["u-"+name] = 20 << 20
			}
			n := newNode(t, parts)
			b := n.boot(t.TempDir(), cfg(tc.kdfKiB), "")
			b.MemAvailable = tc.mem
			cu := &concurrencyUnlocker{}
			b.NewUnlocker = func(keys.Env, *console.Logger) Unlocker { return cu }
			if _, err := b.Run(context.Background()); err != nil {
				t.Fatalf("%v\n%s", err, n.con.String())
			}
			if cu.peakRunning != tc.wantPeak {
				t.Errorf("peak concurrent unlocks %d, want %d", cu.peakRunning, tc.wantPeak)
			}
		})
	}
}

func TestMemAvailable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "meminfo")
	os.WriteFile(p, []byte("MemTotal:        1000 kB\nMemFree:          500 kB\nMemAvailable:     800 kB\n"), 0o644)
	if got, err := MemAvailable(p); err != nil || got != 800<<10 {
		t.Errorf("got %d %v", got, err)
	}
	os.WriteFile(p, []byte("MemTotal: 1 kB\n"), 0o644)
	if _, err := MemAvailable(p); err == nil {
		t.Error("no MemAvailable line accepted")
	}
}

func TestMeasurementsAndLatch(t *testing.T) {
	n := newNode(t, standardParts())
	b := n.boot(t.TempDir(), basicConfig, "")
	m := &fakeMeasurer{}
	b.Measurer = m
	tpmLike := &kindUnlocker{kind: "tpm"}
	b.NewUnlocker = func(keys.Env, *console.Logger) Unlocker { return tpmLike }
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(m.calls, ",")
	if !strings.HasPrefix(got, "phase:enter-initrd,") || !strings.HasSuffix(got, ",phase:leave-initrd") || strings.Count(got, "latch:") != 3 {
		t.Errorf("measurements %s", got)
	}
	for _, k := range m.keys {
		if !bytes.Equal(k, bytes.Repeat([]byte{7}, 64)) {
			t.Errorf("latched key %x", k)
		}
	}
}

type fakeMeasurer struct {
	mu    sync.Mutex
	calls []string
	keys  [][]byte
}

func (f *fakeMeasurer) MeasurePhase(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "phase:"+p)
	return nil
}

func (f *fakeMeasurer) LatchVolumeKey(id string, key []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "latch:"+id)
	f.keys = append(f.keys, append([]byte(nil), key...))
	return nil
}

type kindUnlocker struct{ kind string }

func (k *kindUnlocker) Unlock(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*unlock.Result, error) {
	return &unlock.Result{VolumeID: vol.ID, UUID: "u", VolumeKey: bytes.Repeat([]byte{7}, 64), Formatted: true, Kind: k.kind,
		Mapping: luks2.Mapping{Cipher: "aes-xts-plain64", KeySize: 64, Offset: 16 << 20, Dynamic: true, SectorSize: 512}}, nil
}

var _ = unix.MS_RDONLY

func TestHints(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("map luks2-STATE on /dev/vda2 (aes-xts-plain64, 1 bytes at 2): open /dev/mapper/control: no such file or directory"), "dm-mod, dm-crypt"},
		{errors.New("mkfs: mkfs.xfs is not in the image"), "mkfs.xfs"},
		{errors.New("mount /dev/mapper/luks2-STATE (xfs): no such device"), "filesystem module"},
		{errors.New("something else"), "cryptinit.debug=shell"},
		{&unlock.OpenError{Volume: "STATE", Op: "open", Err: unlock.ErrNoKeyOpens}, "recovery passphrase"},
	} {
		if got := hintFor(tc.err); !strings.Contains(got, tc.want) {
			t.Errorf("hintFor(%v) = %q, want it to mention %q", tc.err, got, tc.want)
		}
	}
}

type panicUnlocker struct{}

func (panicUnlocker) Unlock(context.Context, config.Volume, luks2.Device, int64) (*unlock.Result, error) {
	panic("engine bug")
}

func TestPanicInVolumeBecomesBanner(t *testing.T) {
	n := newNode(t, standardParts())
	b := n.boot(t.TempDir(), volumeDoc("VolumeConfig", "EPHEMERAL", "    - static:\n        passphrase: p\n      slot: 0\n"), "")
	b.NewUnlocker = func(keys.Env, *console.Logger) Unlocker { return panicUnlocker{} }
	_, err := b.Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) || f.Failure.Volume != "EPHEMERAL" || !strings.Contains(err.Error(), "engine bug") {
		t.Fatalf("got %v", err)
	}
}

// TestMetaReadOnce: a boot with no wipe request reads META once and opens
// no volume for a wipe; an unreadable META does not stop a boot whose
// machine config encrypts STATE, and is left as it was (not rewritten).
func TestMetaReadOnce(t *testing.T) {
	n := newNode(t, standardParts())
	root := t.TempDir()
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("first boot: %v\n%s", err, n.con.String())
	}
	reads := map[string]int{}
	var mu sync.Mutex
	metaReads := 0
	counting := func(path string) (BlockDevice, int64, error) {
		mu.Lock()
		reads[filepath.Base(path)]++
		mu.Unlock()
		d, size, err := openFile(path)
		if err == nil && filepath.Base(path) == "META" {
			d = countingReads{d, &metaReads}
		}
		return d, size, err
	}
	b := n.boot(root, basicConfig, "")
	b.Open = counting
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("second boot: %v\n%s", err, n.con.String())
	}
	if reads["META"] != 1 || metaReads != 1 {
		t.Errorf("META opened %d times and read %d times, want once each", reads["META"], metaReads)
	}
	if reads["u-data"] != 1 || reads["EPHEMERAL"] != 1 {
		t.Errorf("volumes opened %v: want each once (to unlock), none for a wipe nobody asked for", reads)
	}

	garbage := bytes.Repeat([]byte{0xA5}, int(meta.Size))
	if err := os.WriteFile(n.parts["META"], garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	n.con.Reset()
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("boot with an unreadable META and a machine config: %v\n%s", err, n.con.String())
	}
	if !strings.Contains(n.con.String(), "meta: unreadable") {
		t.Errorf("the unreadable META is not reported:\n%s", n.con.String())
	}
	if got, _ := os.ReadFile(n.parts["META"]); !bytes.Equal(got, garbage) {
		t.Error("an unreadable META was rewritten")
	}
}

// countingReads counts the reads of the copy at offset 0 of a device.
type countingReads struct {
	BlockDevice
	n *int
}

func (c countingReads) ReadAt(p []byte, off int64) (int, error) {
	if off == 0 {
		*c.n++
	}
	return c.BlockDevice.ReadAt(p, off)
}

// TestInterruptedFormatRedone: a format cut short by a crash (META's format
// journal names the volume; its LUKS2 header never became valid) is redone
// on the next boot instead of being refused as "not empty" forever, and the
// journal entry is cleared. Without a journal record the same partition is
// refused and nothing is written to it.
func TestInterruptedFormatRedone(t *testing.T) {
	n := newNode(t, standardParts())
	root := t.TempDir()
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("first boot: %v\n%s", err, n.con.String())
	}
	// EPHEMERAL's header copies lose their checksums, as when the power
	// failed in the middle of the first format's header write.
	breakHeaders := func() []byte {
		f, err := os.OpenFile(n.parts["EPHEMERAL"], os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, off := range []int64{4096, 16384 + 4096} {
			f.WriteAt([]byte("{torn"), off)
		}
		head := make([]byte, 1<<20)
		f.ReadAt(head, 0)
		return head
	}

	uuid := luksUUID(t, n.parts["EPHEMERAL"])
	before := breakHeaders()
	n.con.Reset()
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err == nil {
		t.Fatalf("a torn header without a journal record was not refused\n%s", n.con.String())
	}
	after := make([]byte, 1<<20)
	f, _ := os.Open(n.parts["EPHEMERAL"])
	f.ReadAt(after, 0)
	f.Close()
	if !bytes.Equal(before, after) {
		t.Fatal("a refused partition was written to")
	}

	mf, err := os.OpenFile(n.parts["META"], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// the record our format wrote before its header: this UUID, stage begun
	if err := (&meta.Journal{Dev: mf}).Begin(meta.Record{Volume: "EPHEMERAL", UUID: uuid}); err != nil {
		t.Fatal(err)
	}
	mf.Close()
	n.con.Reset()
	n.mkfs = nil
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("boot after an interrupted format: %v\n%s", err, n.con.String())
	}
	if strings.Join(n.mkfs, ",") != "EPHEMERAL:xfs" {
		t.Errorf("mkfs %v, want EPHEMERAL formatted again", n.mkfs)
	}
	if con := n.con.String(); !strings.Contains(con, "redoing an interrupted format") ||
		!strings.Contains(con, "volume=EPHEMERAL") || !strings.Contains(con, "erased=\"the LUKS2 header area (bytes 0-") {
		t.Errorf("the redo and what it erased are not reported:\n%s", con)
	}
	mf, _ = os.Open(n.parts["META"])
	rec, err := (&meta.Journal{Dev: mf}).Record("EPHEMERAL")
	mf.Close()
	if err != nil || rec != nil {
		t.Errorf("journal entry left behind: %+v, %v", rec, err)
	}
}

// gateNode holds STATE's mount until u-data is mapped (or 3 s pass): a
// boot that opens u-data only after STATE is mounted waits the full time.
type gateNode struct {
	*node
	dataMapped chan struct{}
	once       sync.Once
	waited     bool // STATE's mount gave up waiting
	ephBefore  bool // EPHEMERAL (lockToSTATE) was mapped before STATE mounted
	stateUp    bool
	mu         sync.Mutex
}

func (g *gateNode) Map(spec dmcrypt.Spec) (string, error) {
	path, err := g.node.Map(spec)
	g.mu.Lock()
	if spec.Name == "luks2-EPHEMERAL" && !g.stateUp {
		g.ephBefore = true
	}
	g.mu.Unlock()
	if spec.Name == "luks2-u-data" {
		g.once.Do(func() { close(g.dataMapped) })
	}
	return path, err
}

func (g *gateNode) Mount(source, target, fstype string, flags uintptr, data string) error {
	if fstype != "" && strings.HasSuffix(source, "luks2-STATE") {
		select {
		case <-g.dataMapped:
		case <-time.After(3 * time.Second):
			g.mu.Lock()
			g.waited = true
			g.mu.Unlock()
		}
		g.mu.Lock()
		g.stateUp = true
		g.mu.Unlock()
	}
	return g.node.Mount(source, target, fstype, flags, data)
}

// TestVolumesAlongsideState: with two CPUs and the machine config at hand,
// a volume that needs nothing from STATE (u-data) unlocks alongside STATE,
// while a lockToSTATE one (EPHEMERAL) still waits for STATE to be mounted;
// with one CPU everything waits for STATE.
func TestVolumesAlongsideState(t *testing.T) {
	for _, tc := range []struct {
		cpus      int
		wantEarly bool
	}{
		{2, true},
		{1, false},
	} {
		t.Run(fmt.Sprintf("%d CPUs", tc.cpus), func(t *testing.T) {
			n := newNode(t, standardParts())
			g := &gateNode{node: n, dataMapped: make(chan struct{})}
			b := n.boot(t.TempDir(), basicConfig, "")
			b.Mapper, b.Mounter, b.CPUs = g, g, tc.cpus
			if _, err := b.Run(context.Background()); err != nil {
				t.Fatalf("boot: %v\n%s", err, n.con.String())
			}
			if early := !g.waited; early != tc.wantEarly {
				t.Errorf("u-data mapped before STATE mounted = %v, want %v", early, tc.wantEarly)
			}
			if g.ephBefore {
				t.Error("EPHEMERAL, locked to STATE, was opened before STATE was mounted")
			}
			said := strings.Contains(n.con.String(), "volumes: u-data unlock alongside STATE")
			if said != tc.wantEarly {
				t.Errorf("console tells of the early start = %v, want %v:\n%s", said, tc.wantEarly, n.con.String())
			}
		})
	}
}

// TestStateFailureWaitsForEarlyVolumes: when STATE fails while a volume
// unlocks alongside it, the boot fails with STATE's banner only after that
// volume has stopped, so nothing writes behind the banner.
func TestStateFailureWaitsForEarlyVolumes(t *testing.T) {
	n := newNode(t, standardParts())
	// STATE holds a filesystem: it is neither empty nor LUKS, so it is refused.
	f, _ := os.OpenFile(n.parts["STATE"], os.O_WRONLY, 0)
	f.WriteAt([]byte("XFSB"), 0)
	f.Close()
	g := &gateNode{node: n, dataMapped: make(chan struct{})}
	b := n.boot(t.TempDir(), basicConfig, "")
	b.Mapper, b.Mounter, b.CPUs = g, g, 2
	_, err := b.Run(context.Background())
	var fatal *Fatal
	if !errors.As(err, &fatal) || fatal.Failure.Volume != "STATE" {
		t.Fatalf("want STATE's failure, got %v\n%s", err, n.con.String())
	}
	steps := len(b.Timeline.Steps())
	time.Sleep(200 * time.Millisecond)
	if after := len(b.Timeline.Steps()); after != steps {
		t.Errorf("%d steps were recorded after Run returned its failure", after-steps)
	}
}

// TestRootByUUIDWaits: a root=UUID= that no device has is looked for again
// until cryptinit.wait= has passed, and the failure says it waited and
// what it saw; a malformed spec fails at once.
func TestRootByUUIDWaits(t *testing.T) {
	for _, tc := range []struct {
		root    string
		minWait time.Duration
		errHas  string
	}{
		{"UUID=12345678-0000-4000-8000-000000000000", 300 * time.Millisecond, "waited 300ms"},
		{"UUID=", 0, "empty filesystem UUID"},
	} {
		n := newNode(t, standardParts())
		b := n.boot(t.TempDir(), basicConfig, "root="+tc.root+" cryptinit.wait=300ms")
		start := time.Now()
		_, err := b.Run(context.Background())
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("root=%s: error %v, want one with %q", tc.root, err, tc.errHas)
		}
		var f *Fatal
		if errors.As(err, &f) && !strings.Contains(f.Failure.Hint, "UUID=") {
			t.Errorf("root=%s: hint %q does not show the UUID= form", tc.root, f.Failure.Hint)
		}
		if took < tc.minWait {
			t.Errorf("root=%s: gave up after %s, want at least %s", tc.root, took, tc.minWait)
		}
	}
}
