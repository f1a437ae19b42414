package vm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

func TestOverlayNewcReadableByCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		testenv.Missing(t, "cpio not installed (images/setup.sh installs it)")
	}
	o := Overlay{
		"/etc/cryptinit/config.yaml": {Data: []byte("kind: VolumeConfig\n"), Mode: 0o600},
		"init":                       {Data: []byte("#!/bin/sh\n"), Mode: 0o755},
	}
	var b bytes.Buffer
	if err := o.WriteNewc(&b); err != nil {
		t.Fatal(err)
	}
	if b.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", b.Len())
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = &b
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v: %s", err, out)
	}
	for name, f := range o {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, f.Data) {
			t.Errorf("%s = %q, want %q", name, got, f.Data)
		}
		st, _ := os.Stat(p)
		if st.Mode().Perm() != f.Mode {
			t.Errorf("%s mode %v, want %v", name, st.Mode().Perm(), f.Mode)
		}
	}
}

func TestCreateDiskLabelsAndFill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	parts := TalosLayout()
	parts = append(parts, Partition{Label: "u-data", Size: 8 * MiB, Fill: func(w io.WriterAt, size int64) error {
		_, err := w.WriteAt([]byte("hello"), size-5)
		return err
	}})
	d, err := CreateDisk(path, parts)
	if err != nil {
		t.Fatal(err)
	}
	disk, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	pt, err := disk.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	table, ok := pt.(*gpt.Table)
	if !ok {
		t.Fatalf("partition table is %T, want GPT", pt)
	}
	if len(table.Partitions) != len(parts) {
		t.Fatalf("%d partitions, want %d", len(table.Partitions), len(parts))
	}
	for i, p := range table.Partitions {
		if p.Name != parts[i].Label {
			t.Errorf("partition %d named %q, want %q", i+1, p.Name, parts[i].Label)
		}
		if got := int64(p.End-p.Start+1) * 512; got != parts[i].Size {
			t.Errorf("%s: %d bytes, want %d", p.Name, got, parts[i].Size)
		}
		if off, _ := d.Offset(p.Name); off != int64(p.Start)*512 {
			t.Errorf("%s: offset %d, table says %d", p.Name, off, p.Start*512)
		}
	}
	got := make([]byte, 5)
	if err := d.ReadAt("u-data", got, 8*MiB-5); err != nil || string(got) != "hello" {
		t.Errorf("fill of u-data: %q, %v", got, err)
	}
	if err := d.Wipe("u-data", 8*MiB); err != nil {
		t.Fatal(err)
	}
	if err := d.ReadAt("u-data", got, 8*MiB-5); err != nil || !bytes.Equal(got, make([]byte, 5)) {
		t.Errorf("after wipe: %q, %v", got, err)
	}
	if _, err := CreateDisk(path, []Partition{{Label: "X", Size: 1000}}); err == nil {
		t.Error("a size that is not a multiple of 1 MiB was accepted")
	}
}

func TestFillConfinedToPartition(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	_, err := CreateDisk(path, []Partition{{Label: "META", Size: MiB, Fill: func(w io.WriterAt, size int64) error {
		_, err := w.WriteAt([]byte("xx"), size-1)
		return err
	}}})
	if err == nil {
		t.Error("a write past the end of META was allowed")
	}
}

func TestConsoleExpect(t *testing.T) {
	c := newConsole(io.Discard, nil)
	c.Write([]byte("\x1b[2Jboot\r\ncryptinit: step one\npartial"))
	i, line, err := c.Expect(time.Second, `^never$`, `^cryptinit: step`)
	if err != nil || i != 1 || line != "cryptinit: step one" {
		t.Fatalf("Expect = %d %q %v", i, line, err)
	}
	// A line already consumed does not match again; half a line never matches.
	if _, _, err := c.Expect(50*time.Millisecond, `step one`); err == nil {
		t.Error("consumed line matched twice")
	}
	if _, _, err := c.Expect(50*time.Millisecond, `partial`); err == nil {
		t.Error("an unfinished line matched")
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		c.Write([]byte(" done\n"))
	}()
	if _, line, err := c.Expect(time.Second, `partial done`); err != nil || line != "partial done" {
		t.Errorf("line completed later: %q %v", line, err)
	}
	if !strings.HasPrefix(c.Text(), "boot\n") {
		t.Errorf("Text keeps escape codes: %q", c.Text())
	}
	c.close()
	if _, _, err := c.Expect(time.Second, `x`); !errors.Is(err, ErrConsoleClosed) {
		t.Errorf("after close: %v, want ErrConsoleClosed", err)
	}
}

func TestParseRootReport(t *testing.T) {
	console := strings.Join([]string{
		`cryptinit: timeline {"step":"key","volume":"STATE","slot":0,"start_ms":10,"duration_ms":1500}`,
		`CRYPTINIT-ROOT: reached real root, pid 1, kernel 6.1.0-56-amd64`,
		`CRYPTINIT-ROOT: mount /system/state /dev/mapper/luks2-STATE xfs rw,relatime`,
		`CRYPTINIT-ROOT: marker /system/state found 2`,
		`CRYPTINIT-ROOT: marker /system/state wrote 3`,
		`CRYPTINIT-ROOT: mount /var /dev/dm-1 xfs rw`,
		`CRYPTINIT-ROOT: marker /var none`,
		`CRYPTINIT-ROOT: marker /var wrote 1`,
		`CRYPTINIT-ROOT: dm dm-0 name=luks2-STATE uuid=CRYPT-LUKS2-abc-luks2-STATE sectors=100 slaves=vdc2 `,
		`CRYPTINIT-ROOT: dm dm-1 name=luks2-EPHEMERAL uuid=CRYPT-LUKS2-def-luks2-EPHEMERAL sectors=100 slaves=vdc3 `,
		`CRYPTINIT-ROOT: done`,
	}, "\n")
	r, err := ParseRootReport(console)
	if err != nil {
		t.Fatal(err)
	}
	if m := r.Markers["/system/state"]; m.Found != 2 || m.Wrote != 3 {
		t.Errorf("STATE marker %+v", m)
	}
	if m := r.Markers["/var"]; m.Found != 0 || m.Wrote != 1 {
		t.Errorf("/var marker %+v", m)
	}
	if err := r.Mounted("/system/state", "luks2-STATE"); err != nil {
		t.Error(err)
	}
	if err := r.Mounted("/var", "luks2-EPHEMERAL"); err != nil {
		t.Errorf("mount by dm-N name: %v", err)
	}
	if err := r.Mounted("/var", "luks2-STATE"); err == nil {
		t.Error("/var reported as luks2-STATE")
	}
	if err := r.Mounted("/var/mnt/data", ""); err == nil {
		t.Error("an absent mount reported as mounted")
	}
	if len(r.Timeline) != 1 || r.Timeline[0].Duration != 1500 || r.Split()["kdf"] != 1500 {
		t.Errorf("timeline %+v split %v", r.Timeline, r.Split())
	}
	for _, tc := range []struct {
		name     string
		timeline []Step
		want     map[string]float64
	}{
		{
			"a timeline from before key-fetch/kdf: key counts as kdf",
			[]Step{
				{Name: "modules", Start: 0, Duration: 100},
				{Name: "devices", Start: 100, Duration: 50},
				{Name: "unlock", Volume: "STATE", Start: 150, Duration: 1000},
				{Name: "key", Volume: "STATE", Start: 150, Duration: 700},
				{Name: "mkfs", Volume: "STATE", Start: 900, Duration: 200},
				{Name: "switch_root", Start: 1300},
			},
			map[string]float64{"modules": 100, "wait": 50, "kdf": 700, "mkfs": 200, "total": 1300, "other": 250},
		},
		{
			// key-fetch and kdf inside key, boot time blocked on modules
			// in modules-wait, background loading not counted
			"the init's current timeline",
			[]Step{
				{Name: "modules", Start: 0, Duration: 100},
				{Name: "modules-background", Start: 100, Duration: 2000},
				{Name: "devices", Start: 100, Duration: 50},
				{Name: "unlock", Volume: "STATE", Start: 150, Duration: 1000},
				{Name: "key", Volume: "STATE", Start: 150, Duration: 700},
				{Name: "key-fetch", Volume: "STATE", Start: 150, Duration: 100},
				{Name: "kdf", Volume: "STATE", Start: 250, Duration: 600},
				{Name: "modules-wait", Volume: "STATE", Start: 900, Duration: 30},
				{Name: "mkfs", Volume: "STATE", Start: 930, Duration: 200},
				{Name: "switch_root", Start: 1300},
			},
			map[string]float64{"modules": 130, "wait": 50, "key": 100, "kdf": 600, "mkfs": 200, "total": 1300, "other": 220},
		},
		{
			// overlapping KDFs count once, a module wait under a KDF
			// counts as KDF, and the parts add up to the total
			"two volumes unlocking at once",
			[]Step{
				{Name: "modules", Start: 0, Duration: 100},
				{Name: "devices", Start: 100, Duration: 50},
				{Name: "kdf", Volume: "STATE", Start: 150, Duration: 600},
				{Name: "kdf", Volume: "EPHEMERAL", Start: 160, Duration: 700},
				{Name: "modules-wait", Volume: "STATE", Start: 750, Duration: 200},
				{Name: "key-fetch", Volume: "EPHEMERAL", Start: 150, Duration: 10},
				{Name: "switch_root", Start: 1000},
			},
			map[string]float64{"modules": 190, "wait": 50, "kdf": 710, "total": 1000, "other": 50},
		},
	} {
		r.Timeline = tc.timeline
		if got := r.Split(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Split of %s = %v, want %v", tc.name, got, tc.want)
		}
	}
	if _, err := ParseRootReport(strings.Replace(console, "CRYPTINIT-ROOT: done", "", 1)); err == nil {
		t.Error("a report without its done line was accepted")
	}
}

func TestLUKSKeyslotsAgainstCryptsetup(t *testing.T) {
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		testenv.Missing(t, "cryptsetup not installed (images/setup.sh installs cryptsetup-bin)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "luks.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 20*MiB)
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("a"), 0o600)
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("cryptsetup", append(args, "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cryptsetup %v: %v: %s", args, err, out)
		}
	}
	run("luksFormat", "--type", "luks2", "--key-slot", "3", "--key-file", pass, img)
	pass2 := filepath.Join(dir, "pass2")
	os.WriteFile(pass2, []byte("b"), 0o600)
	run("luksAddKey", "--key-slot", "7", "--key-file", pass, img, pass2)
	d, err := CreateDisk(filepath.Join(dir, "disk.img"), []Partition{{Label: "EPHEMERAL", Size: 20 * MiB, Fill: FillFrom(img)}})
	if err != nil {
		t.Fatal(err)
	}
	slots, err := d.LUKSKeyslots("EPHEMERAL")
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) != 2 || slots[0] != 3 || slots[1] != 7 {
		t.Errorf("keyslots %v, want [3 7]", slots)
	}
	if err := d.Wipe("EPHEMERAL", MiB); err != nil {
		t.Fatal(err)
	}
	if _, err := d.LUKSKeyslots("EPHEMERAL"); err == nil {
		t.Error("a wiped partition still reads as LUKS")
	}
}

func TestConsoleExpectPrompt(t *testing.T) {
	c := newConsole(io.Discard, nil)
	c.Write([]byte("cryptinit: starting\ncryptinit: Enter passphrase for EPHEMERAL: "))
	if _, _, err := c.Expect(50*time.Millisecond, `Enter passphrase`); err == nil {
		t.Error("Expect matched an unfinished line")
	}
	if _, line, err := c.ExpectPrompt(time.Second, `Enter passphrase.*EPHEMERAL`); err != nil || !strings.HasSuffix(line, "EPHEMERAL: ") {
		t.Errorf("ExpectPrompt = %q, %v", line, err)
	}
	// The prompt is consumed: its line, finished later, does not match again.
	c.Write([]byte("\ncryptinit: EPHEMERAL: opened\n"))
	if _, line, err := c.Expect(time.Second, `Enter passphrase|opened`); err != nil || !strings.Contains(line, "opened") {
		t.Errorf("after the prompt: %q, %v", line, err)
	}
}
