package unlock

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cryptinit/cryptinit/internal/testenv"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

const (
	testUUID  = "8c4b2a34-7d2e-4c1f-9a55-3e0f6d21b9a7"
	imageSize = 20 << 20 // 16 MiB LUKS2 header area + 4 MiB data
)

// smallKDF is the test cost: argon2id, 8 MiB, 1 iteration, 1 lane.
const smallKDF = "  kdf: {type: argon2id, memoryKiB: 8192, iterations: 1, parallelism: 1}\n"

// image makes a zeroed sparse image file and returns it opened read-write.
func image(t testing.TB, size int64) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "part.img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// testTrust is the trust of the tests' configs: written by the test, as a
// signed image's config is by its builder.
var testTrust = config.Trust{Source: "the test", Authenticated: true}

// volume parses a one-volume machine config (authenticated, as the signed
// image's would be).
func volume(t testing.TB, yaml, id string) config.Volume {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	v := cfg.Volume(id)
	if v == nil {
		t.Fatalf("no volume %s in config", id)
	}
	v.Trust = testTrust
	return *v
}

// configFile parses a file from configs/.
func configFile(t testing.TB, name, id string) config.Volume {
	t.Helper()
	cfg, err := config.ParseFile(filepath.Join("..", "configs", name))
	if err != nil {
		t.Fatal(err)
	}
	v := cfg.Volume(id)
	if v == nil {
		t.Fatalf("%s has no %s", name, id)
	}
	v.Trust = testTrust
	return *v
}

func staticConfig(id string, slots map[int]string) string {
	y := "kind: VolumeConfig\nname: " + id + "\nencryption:\n  keys:\n"
	for s := 0; s < 32; s++ {
		if p, ok := slots[s]; ok {
			y += "    - static: {passphrase: " + p + "}\n      slot: " + itoa(s) + "\n"
		}
	}
	return y + smallKDF
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return string(rune('0'+i/10)) + string(rune('0'+i%10))
}

// opens reports whether passphrase opens slot on dev (AnySlot for any).
func opens(t testing.TB, dev io.ReaderAt, passphrase string, slot int) bool {
	t.Helper()
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		t.Fatal(err)
	}
	vk, _, err := hdr.Unlock(dev, []byte(passphrase), slot)
	if err != nil && !errors.Is(err, luks2.ErrNoKeyslotOpens) {
		t.Fatalf("unlock: %v", err)
	}
	keys.Zero(vk)
	return err == nil
}

func slotsOf(t testing.TB, dev io.ReaderAt) []int {
	t.Helper()
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		t.Fatal(err)
	}
	var s []int
	for i := 0; i < 32; i++ {
		if _, ok := hdr.Keyslots[i]; ok {
			s = append(s, i)
		}
	}
	return s
}

func digest(t testing.TB, f *os.File) [32]byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func needTool(t testing.TB, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		testenv.Missing(t, "%s not installed (images/setup.sh installs it); skipping", tool)
	}
}

func run(t testing.TB, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func nodeEngine(stateDir string) *Engine {
	return &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID)}, StateDir: stateDir}
}

var ctx = context.Background()
