package boot

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/boot/dmcrypt"
)

// slowMapper holds one mapping in dm-setup until released.
type slowMapper struct {
	*node
	name     string
	reached  chan struct{} // closed when that mapping starts
	release  chan struct{} // closed to let it go on
	finished chan struct{} // closed once it returned
}

func (m *slowMapper) Map(spec dmcrypt.Spec) (string, error) {
	if spec.Name != m.name {
		return m.node.Map(spec)
	}
	close(m.reached)
	<-m.release
	defer close(m.finished)
	return m.node.Map(spec)
}

// TestCrashWaitsForEarlyVolumes: a crash in Run (caught by recoverFatal,
// turned into the banner) while a volume that unlocks alongside STATE is
// still being mapped returns only once that volume is done, so Lockdown
// (before a debug shell) sees every mapping the boot made.
func TestCrashWaitsForEarlyVolumes(t *testing.T) {
	n := newNode(t, standardParts())
	b := n.boot(t.TempDir(), basicConfig, "")
	b.CPUs = 2 // u-data (static key) unlocks alongside STATE
	m := &slowMapper{node: n, name: "luks2-u-data", reached: make(chan struct{}), release: make(chan struct{}), finished: make(chan struct{})}
	b.Mapper = m
	b.afterState = func() {
		select {
		case <-m.reached:
		case <-time.After(30 * time.Second):
			t.Error("u-data never reached dm-setup")
		}
		go func() {
			time.Sleep(100 * time.Millisecond)
			close(m.release)
		}()
		panic("injected crash after STATE")
	}
	_, err := b.Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) || !strings.Contains(err.Error(), "injected crash") {
		t.Fatalf("boot: %v, want the crash as a *Fatal", err)
	}
	b.opened.mu.Lock()
	seen := slices.Clone(b.opened.maps) // what Lockdown would unmap now
	b.opened.mu.Unlock()

	select {
	case <-m.finished:
	case <-time.After(30 * time.Second):
		t.Fatal("u-data's mapping never finished")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for name := range n.mapped {
		if !slices.Contains(seen, name) {
			t.Errorf("%s was mapped after Run returned; Lockdown saw only %v", name, seen)
		}
	}
	if _, ok := n.mapped["luks2-u-data"]; !ok {
		t.Errorf("u-data not mapped: %v", n.mapped)
	}
}
