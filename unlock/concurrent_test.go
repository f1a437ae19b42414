package unlock

import (
	"sync"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// TestConcurrentVolumes unlocks EPHEMERAL and a user volume at the same time
// with one Engine and one META journal, as the boot does.
func TestConcurrentVolumes(t *testing.T) {
	state := t.TempDir()
	keys.EnsureSalt(state, nil)
	journal := &meta.Journal{Dev: make(memMeta, meta.Size)}
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID)}, StateDir: state, Journal: journal}
	ids := []string{"EPHEMERAL", "u-data"}
	devs := []*crashDev{{f: image(t, imageSize), left: -1}, {f: image(t, imageSize), left: -1}} // never crash
	vols := []config.Volume{configFile(t, "nodeid.yaml", ids[0]), configFile(t, "nodeid.yaml", ids[1])}
	for boot := 0; boot < 2; boot++ {
		var wg sync.WaitGroup
		errs := make([]error, len(ids))
		results := make([]*Result, len(ids))
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = e.Unlock(ctx, vols[i], devs[i], imageSize)
			}()
		}
		wg.Wait()
		for i := range ids {
			if errs[i] != nil {
				t.Fatalf("boot %d %s: %v", boot, ids[i], errs[i])
			}
			if results[i].Formatted != (boot == 0) {
				t.Fatalf("boot %d %s: formatted=%v", boot, ids[i], results[i].Formatted)
			}
			results[i].Zero()
		}
	}
	for _, id := range ids {
		if r, err := journal.Record(id); r != nil || err != nil {
			t.Errorf("%s left pending in the journal", id)
		}
	}
}
