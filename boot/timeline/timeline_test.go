package timeline

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock advances by a fixed amount on each reading.
type fakeClock struct {
	mu  sync.Mutex
	t   time.Time
	inc time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.inc)
	return c.t
}

func TestSpans(t *testing.T) {
	origin := time.Unix(1000, 0)
	clk := &fakeClock{t: origin, inc: 250 * time.Millisecond}
	var lines []string
	tl := New(origin, clk.now, func(s Step) { lines = append(lines, s.Line()) })

	sp := tl.Begin("modules", "")       // begins at 250ms
	if err := sp.End(nil); err != nil { // ends at 500ms
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := tl.Begin("kdf", "STATE").Slot(0).End(boom); err != boom { // 750 -> 1000
		t.Fatalf("End returned %v, want the error it was given", err)
	}
	steps := tl.Steps()
	if len(steps) != 2 {
		t.Fatalf("got %d steps", len(steps))
	}
	if s := steps[0]; s.Name != "modules" || s.Start != 250 || s.Duration != 250 || s.Err != "" || s.Slot != nil {
		t.Errorf("step 0 = %+v", s)
	}
	if s := steps[1]; s.Name != "kdf" || s.Volume != "STATE" || s.Slot == nil || *s.Slot != 0 || s.Start != 750 || s.Err != "boom" {
		t.Errorf("step 1 = %+v", s)
	}
	want := `cryptinit: timeline {"step":"kdf","volume":"STATE","slot":0,"start_ms":750,"duration_ms":250,"error":"boom"}`
	if len(lines) != 2 || lines[1] != want {
		t.Errorf("lines = %q\nwant second %q", lines, want)
	}
	// A line parses back into the same step.
	var back Step
	if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[1], LinePrefix)), &back); err != nil || back.Name != "kdf" || *back.Slot != 0 {
		t.Errorf("line does not round-trip: %v %+v", err, back)
	}
}

func TestEndTwice(t *testing.T) {
	tl := New(time.Now(), nil, nil)
	sp := tl.Begin("x", "")
	sp.End(nil)
	sp.End(errors.New("late"))
	if n := len(tl.Steps()); n != 1 {
		t.Fatalf("second End recorded again: %d steps", n)
	}
}

func TestRecordAndWriteFile(t *testing.T) {
	origin := time.Unix(0, 0)
	tl := New(origin, nil, nil)
	slot := 3
	tl.Record("key-fetch", "EPHEMERAL", &slot, origin.Add(1500*time.Microsecond), 2*time.Second, nil)
	path := filepath.Join(t.TempDir(), "run", "cryptinit", "timeline.json")
	if err := tl.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []Step
	if err := json.Unmarshal(b, &steps); err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 || steps[0].Start != 1.5 || steps[0].Duration != 2000 || *steps[0].Slot != 3 {
		t.Errorf("file holds %+v", steps)
	}
}

func TestConcurrent(t *testing.T) {
	tl := New(time.Now(), nil, nil)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); tl.Begin("mount", "u-x").End(nil) }()
	}
	wg.Wait()
	if n := len(tl.Steps()); n != 20 {
		t.Fatalf("got %d steps, want 20", n)
	}
}
