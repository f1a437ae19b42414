package boot

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// signalPrompt is a console whose passphrase question closes asked (once)
// and is answered with pass; TPM PINs are answered with "1234".
type signalPrompt struct {
	pass  string
	once  sync.Once
	asked chan struct{}
}

func (p *signalPrompt) Passphrase(volume string, try, tries int) ([]byte, error) {
	p.once.Do(func() { close(p.asked) })
	if try > 1 {
		return nil, console.ErrPromptTimeout
	}
	return []byte(p.pass), nil
}

func (p *signalPrompt) TPMPIN(volume string, try, tries int) ([]byte, error) {
	return []byte("1234"), nil
}

// pinThenPrompt opens u-a with a TPM PIN asked once u-b's passphrase
// question is on the console; no key opens u-b (failed is closed then).
type pinThenPrompt struct {
	env    keys.Env
	asked  chan struct{}
	once   sync.Once
	failed chan struct{}
}

func (u *pinThenPrompt) Unlock(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*unlock.Result, error) {
	if vol.ID != "u-a" {
		u.once.Do(func() { close(u.failed) })
		return nil, unlock.ErrNoKeyOpens
	}
	<-u.asked
	pin, err := u.env.PIN.TPMPIN(vol.ID, 1, keys.PINTries)
	if err != nil {
		return nil, err
	}
	keys.Zero(pin)
	return &unlock.Result{VolumeID: vol.ID, UUID: "u", VolumeKey: make([]byte, 64), Formatted: true, Kind: "tpm",
		Mapping: luks2.Mapping{Cipher: "aes-xts-plain64", KeySize: 64, Offset: 16 << 20, Dynamic: true, SectorSize: 512}}, nil
}

// TestPINAndPassphrasePromptsDoNotDeadlock: u-a's unlock holds its KDF
// memory and asks for a TPM PIN while u-b, which no key opened, asks for
// its passphrase and then needs KDF memory too; both do not fit at once.
// The boot must finish, not wait forever on the console lock and the
// memory limiter taken in opposite orders.
func TestPINAndPassphrasePromptsDoNotDeadlock(t *testing.T) {
	const kdf = "  kdf: {type: argon2id, memoryKiB: 65536, iterations: 1, parallelism: 1}\n"
	var docs []string
	for _, name := range []string{"a", "b"} {
		docs = append(docs, strings.Replace(volumeDoc("UserVolumeConfig", name, "    - static:\n        passphrase: p\n      slot: 0\n"), cheapKDF, kdf, 1))
	}
	n := newNode(t, map[string]int64{"STATE": 20 << 20, "ROOT": 1 << 20, "u-a": 20 << 20, "u-b": 20 << 20})
	// both headers have a 64 MiB argon2id slot; "typed" opens u-b
	f, err := os.OpenFile(n.parts["u-b"], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = luks2.Format(f, 20<<20, []byte("typed"), luks2.FormatOptions{
		KDF: luks2.KDF{Type: "argon2id", Time: 1, Memory: 64 << 10, Parallel: 1}, DigestIterations: 1000})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := os.ReadFile(n.parts["u-b"])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.parts["u-a"], hdr, 0o600); err != nil {
		t.Fatal(err)
	}

	// u-b's mapping holds a filesystem (node.Map keeps an existing file)
	mapped := filepath.Join(n.dir, "luks2-u-b")
	if err := os.WriteFile(mapped, []byte("XFSB"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(mapped, 2<<20); err != nil {
		t.Fatal(err)
	}

	b := n.boot(t.TempDir(), strings.Join(docs, "---\n"), "")
	b.MemAvailable = 100 << 20
	asked := make(chan struct{})
	b.Prompt = &signalPrompt{pass: "typed", asked: asked}
	bFailed := make(chan struct{})
	b.NewUnlocker = func(env keys.Env, _ *console.Logger) Unlocker {
		return &pinThenPrompt{env: env, asked: asked, failed: bFailed}
	}
	// u-a takes its memory once no key opened u-b, as when u-b's keys
	// fail fast (a KMS that refuses) and u-a's TPM is slow
	b.Open = func(path string) (BlockDevice, int64, error) {
		if path == n.parts["u-a"] {
			<-bFailed
		}
		return openFile(path)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.Run(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v\n%s", err, n.con.String())
		}
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("the volumes did not open within 10 s (deadlock between the PIN and passphrase prompts)\n%s\n%s", n.con.String(), buf[:runtime.Stack(buf, true)])
	}
	for _, want := range []string{"u-a: formatted", "u-b: opened with slot 0 (console passphrase)"} {
		if !strings.Contains(n.con.String(), want) {
			t.Errorf("log has no %q:\n%s", want, n.con.String())
		}
	}
}

// memPINPrompt checks, while it is asked for a TPM PIN, that the KDF
// memory of the volume asking is free for others.
type memPINPrompt struct {
	fakePrompt
	lim     *memLimiter
	freeErr error
}

func (p *memPINPrompt) TPMPIN(volume string, try, tries int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	release, err := p.lim.acquire(ctx, 64<<20)
	if err == nil {
		release()
	}
	p.freeErr = err
	return []byte("1234"), nil
}

// TestPINPromptGivesMemoryBack: a volume asked for its TPM PIN does not
// keep its KDF memory while a person types, and has it again after.
func TestPINPromptGivesMemoryBack(t *testing.T) {
	lim := newMemLimiter(100 << 20)
	release, err := lim.acquireFor(context.Background(), "u-a", 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	p := &memPINPrompt{lim: lim}
	b := &Boot{Root: t.TempDir(), Prompt: p}
	b.Cmdline.PromptTimeout = time.Minute
	var env keys.Env
	b.NewUnlocker = func(e keys.Env, _ *console.Logger) Unlocker { env = e; return nil }
	b.unlocker(&plan{}, lim)
	pin, err := env.PIN.TPMPIN("u-a", 1, keys.PINTries)
	if err != nil || string(pin) != "1234" {
		t.Fatalf("PIN %q, %v", pin, err)
	}
	if p.freeErr != nil {
		t.Errorf("u-a's 64 MiB were held while the PIN was asked: %v", p.freeErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if r, err := lim.acquire(ctx, 64<<20); err == nil {
		r()
		t.Errorf("u-a's 64 MiB were not taken again after the PIN")
	}
	release()
	if r, err := lim.acquire(context.Background(), 100<<20); err != nil {
		t.Errorf("after release: %v", err)
	} else {
		r()
	}
}
