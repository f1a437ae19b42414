package unlock

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// hangingKMS is fakeKMS that, once hang is set, answers nothing until the
// caller gives up (a KMS behind a black-holed route).
type hangingKMS struct {
	fakeKMS
	hang  atomic.Bool
	calls atomic.Int32 // while hanging
}

func (h *hangingKMS) wait(ctx context.Context) error {
	h.calls.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

func (h *hangingKMS) Seal(ctx context.Context, ep, node string, data []byte) ([]byte, error) {
	if h.hang.Load() {
		return nil, h.wait(ctx)
	}
	return h.fakeKMS.Seal(ctx, ep, node, data)
}

func (h *hangingKMS) Unseal(ctx context.Context, ep, node string, sealed []byte) ([]byte, error) {
	if h.hang.Load() {
		return nil, h.wait(ctx)
	}
	return h.fakeKMS.Unseal(ctx, ep, node, sealed)
}

const budgetConfig = "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
	"    - static: {passphrase: first}\n      slot: 0\n" +
	"    - kms: {endpoint: grpc://kms:1}\n      slot: 1\n" + smallKDF

// TestSyncDuringKMSOutage is issue 10 defect 9: the static key opens, the
// KMS hangs. In sync, the fingerprint needs nothing from the KMS (no call
// at all); when a full sync must run, the KMS costs at most the budget, its
// slot is reported as skipped (not wrong) and nothing is written.
func TestSyncDuringKMSOutage(t *testing.T) {
	const keyTimeout, budget = 3 * time.Second, 300 * time.Millisecond
	kms := &hangingKMS{}
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: kms}, KeyTimeout: keyTimeout, SyncKeyBudget: budget}
	vol := volume(t, budgetConfig, "EPHEMERAL")
	dev := image(t, imageSize)
	if r, err := e.Unlock(ctx, vol, dev, imageSize); err != nil || len(r.Sync.Added) != 1 {
		t.Fatalf("format: %v %v", err, r.Sync)
	}
	kms.hang.Store(true)
	before := digest(t, dev)

	// in sync since the last boot: the KMS is not asked
	start := time.Now()
	r, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil || r.Slot != 0 || !r.Sync.UpToDate {
		t.Fatalf("up-to-date boot: %v %v", err, r.Sync)
	}
	t.Logf("in-sync boot with the KMS hanging: %s, %d KMS calls", time.Since(start).Round(time.Millisecond), kms.calls.Load())
	if n := kms.calls.Load(); n != 0 {
		t.Errorf("the fingerprint asked the hanging KMS %d times (took %s)", n, time.Since(start))
	}
	if digest(t, dev) != before {
		t.Error("the up-to-date sync wrote to the volume")
	}

	// no fingerprint (e.g. the first boot after an upgrade): a full sync,
	// whose KMS check costs at most the budget
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := storedFingerprint(hdr)
	if err := luks2.RemoveToken(dev, id); err != nil {
		t.Fatal(err)
	}
	before = digest(t, dev)
	res, err := e.Open(ctx, vol, dev)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	rep := e.Sync(ctx, vol, dev, res)
	took := time.Since(start)
	t.Logf("full sync with the KMS hanging: %s (budget %s, key timeout %s)", took.Round(time.Millisecond), budget, keyTimeout)
	if took > budget+time.Second {
		t.Errorf("sync took %s with a budget of %s (key timeout %s)", took, budget, keyTimeout)
	}
	if digest(t, dev) != before {
		t.Error("sync wrote to the volume although the KMS never answered")
	}
	if rep.Changed() || rep.UpToDate || strings.Join(rep.Skipped, ",") != "check slot 1 (kms)" ||
		len(rep.Problems) != 1 || !errors.Is(rep.Problems[0], ErrSyncBudget) {
		t.Errorf("report: %v (skipped %q)", rep, rep.Skipped)
	}
	if strings.Contains(rep.String(), "does not open") || errors.Is(rep.Problems[0], keys.ErrWrongKey) {
		t.Errorf("the hanging key is reported as wrong: %v", rep)
	}
	// the KMS slot still opens once the KMS is back
	kms.hang.Store(false)
	if r, err := e.Open(ctx, volume(t, strings.Replace(budgetConfig, "slot: 0", "slot: 3", 1), "EPHEMERAL"), dev); err != nil || r.Slot != 1 {
		t.Fatalf("kms slot after the outage: %v", err)
	}
}

// TestSyncBudgetBoundsEnroll: a kms slot to add while the KMS hangs costs at
// most the budget and is skipped; the other configured keys are still
// checked and nothing is written for the kms slot.
func TestSyncBudgetBoundsEnroll(t *testing.T) {
	const budget = 300 * time.Millisecond
	kms := &hangingKMS{}
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: kms}, KeyTimeout: 3 * time.Second, SyncKeyBudget: budget}
	dev := image(t, imageSize)
	static := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "first"}), "EPHEMERAL")
	if _, err := e.Unlock(ctx, static, dev, imageSize); err != nil {
		t.Fatal(err)
	}
	kms.hang.Store(true)
	before := digest(t, dev)
	start := time.Now()
	r, err := e.Unlock(ctx, volume(t, budgetConfig, "EPHEMERAL"), dev, imageSize)
	took := time.Since(start)
	if err != nil || r.Slot != 0 {
		t.Fatal(err)
	}
	if took > budget+2*time.Second { // one KDF (8 MiB argon2) besides the budget
		t.Errorf("unlock took %s with a sync budget of %s", took, budget)
	}
	if strings.Join(r.Sync.Skipped, ",") != "add slot 1 (kms)" || r.Sync.Changed() || len(r.Sync.Problems) != 1 ||
		!errors.Is(r.Sync.Problems[0], ErrSyncBudget) {
		t.Errorf("report: %v (skipped %q)", r.Sync, r.Sync.Skipped)
	}
	if digest(t, dev) != before {
		t.Error("the volume changed although the kms key could not be created")
	}
}
