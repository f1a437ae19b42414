package boot

import (
	"context"
	"fmt"
	"sync"

	"github.com/cryptinit/cryptinit/unlock/config"
)

// The PCR 15 latch. Every tpm key cryptinit enrolls is bound to PCR 15 at
// the value it holds at its volume's place in the boot: zero for STATE
// (nothing is latched before STATE), STATE's latch for every volume after
// STATE. So the boot latches in that order:
//
//  1. STATE's key unseals; STATE is latched right after it opens, before
//     the boot reads anything from it (its mount, the lockToSTATE salt,
//     the config copy).
//  2. The volumes after STATE unseal (all see STATE's latch), then each is
//     latched, and only once every one of them is past its keys (opened or
//     failed), since a latch would stop the others' unseal; each is latched
//     before it is mounted.
//
// A planted or swapped STATE opens with another volume key, latches another
// value, and no key of a later volume unseals. Every encrypted volume is
// latched, whichever key opened it, so PCR 15 depends only on volume keys.

// latchOrder is the barrier of step 2: volumes after STATE wait in it
// until STATE is done and every volume after STATE is past its keys. A nil
// *latchOrder (a Boot not started by Run) lets every volume latch at once.
type latchOrder struct {
	mu        sync.Mutex
	stateDone bool             // STATE latched (or has no latch: absent, plain)
	final     bool             // every volume after STATE is registered
	pending   map[*volume]bool // registered volumes still at their keys
	released  chan struct{}    // closed once all of the above hold
}

func newLatchOrder() *latchOrder {
	return &latchOrder{pending: map[*volume]bool{}, released: make(chan struct{})}
}

// expect registers volumes after STATE whose keys are yet to be used.
func (o *latchOrder) expect(vols []*volume) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, v := range vols {
		o.pending[v] = true
	}
}

// stateLatched says STATE's latch is done, or that there is none.
func (o *latchOrder) stateLatched() {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stateDone = true
	o.check()
}

// allExpected says no more volumes will be registered.
func (o *latchOrder) allExpected() {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.final = true
	o.check()
}

// keysDone says v is past its keys: opened, or failed. Calling it twice
// is harmless.
func (o *latchOrder) keysDone(v *volume) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.pending, v)
	o.check()
}

func (o *latchOrder) check() {
	if o.stateDone && o.final && len(o.pending) == 0 {
		select {
		case <-o.released:
		default:
			close(o.released)
		}
	}
}

// wait blocks until every volume may be latched, or ctx ends.
func (o *latchOrder) wait(ctx context.Context) error {
	select {
	case <-o.released:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// latchOpened latches the just opened volume v into PCR 15 at its place in
// the order above; it returns only when v may be read. A failed extend is
// logged and the boot goes on: the later volumes' tpm keys then fail to
// unseal (PCR 15 is not what they were sealed to), so nothing opens that
// should not.
func (b *Boot) latchOpened(ctx context.Context, v *volume, volumeKey []byte) error {
	if b.Measurer == nil {
		return nil // no TPM: nothing to latch, no order to keep
	}
	if v.ID != config.StateVolume && b.latchWait != nil {
		b.latchWait.keysDone(v)
		if err := b.step("pcr15-wait", v.ID, func() error { return b.latchWait.wait(ctx) }); err != nil {
			// the boot is failing: latch anyway, so nothing unseals after it
			b.latch(v, volumeKey)
			return fmt.Errorf("waiting for the other volumes' keys before the PCR 15 latch: %w", err)
		}
	}
	b.latch(v, volumeKey)
	return nil
}

// latch extends PCR 15 with v's latch, logging a failure.
func (b *Boot) latch(v *volume, volumeKey []byte) {
	b.step("pcr15-latch", v.ID, func() error {
		err := b.Measurer.LatchVolumeKey(v.ID, volumeKey)
		if err != nil {
			b.logf("%s: tpm: PCR 15 latch: %v (tpm keys of later volumes will not unseal)", v.ID, err)
		}
		return err
	})
}
