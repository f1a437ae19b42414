// Package timeline records how long each boot step took, so a slow boot can be
// explained from its console log alone.
//
// Every finished step is printed as one console line with a stable prefix that
// the image harness and the demo parse:
//
//	cryptinit: timeline {"step":"kdf","volume":"STATE","slot":0,"start_ms":812.4,"duration_ms":1530.2}
//
// start_ms is the time since init start at which the step began; error is set
// when the step failed. The whole list is also written as a JSON array (same
// objects) to /run/cryptinit/timeline.json, which the new root sees after
// switch_root because /run moves with it.
package timeline

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// LinePrefix starts every timeline console line; the JSON object follows.
const LinePrefix = "cryptinit: timeline "

// Step is one recorded boot step. Times are milliseconds, rounded to 0.1 ms.
type Step struct {
	Name     string  `json:"step"`
	Volume   string  `json:"volume,omitempty"`
	Slot     *int    `json:"slot,omitempty"`
	Start    float64 `json:"start_ms"`
	Duration float64 `json:"duration_ms"`
	Err      string  `json:"error,omitempty"`
}

// Line renders the step as its console line (without a trailing newline).
func (s Step) Line() string {
	b, _ := json.Marshal(s)
	return LinePrefix + string(b)
}

// Timeline collects steps; it is safe for concurrent use (volumes unlock in
// parallel).
type Timeline struct {
	origin time.Time
	now    func() time.Time
	emit   func(Step)

	mu    sync.Mutex
	steps []Step
}

// New starts a timeline whose zero is origin (the init's start). emit, when
// not nil, is called with each finished step (the boot prints its Line).
func New(origin time.Time, now func() time.Time, emit func(Step)) *Timeline {
	if now == nil {
		now = time.Now
	}
	return &Timeline{origin: origin, now: now, emit: emit}
}

// Span is a step in progress.
type Span struct {
	t      *Timeline
	step   Step
	begun  time.Time
	closed bool
}

// Begin starts a step. volume may be empty.
func (t *Timeline) Begin(name, volume string) *Span {
	now := t.now()
	return &Span{t: t, begun: now, step: Step{Name: name, Volume: volume, Start: ms(now.Sub(t.origin))}}
}

// Slot sets the key slot the step is about.
func (s *Span) Slot(n int) *Span {
	s.step.Slot = &n
	return s
}

// End finishes the step with err (nil on success) and returns err, so a call
// site can write `return span.End(err)`. A second End is ignored.
func (s *Span) End(err error) error {
	if s.closed {
		return err
	}
	s.closed = true
	s.step.Duration = ms(s.t.now().Sub(s.begun))
	if err != nil {
		s.step.Err = err.Error()
	}
	s.t.add(s.step)
	return err
}

// Record adds a step measured elsewhere (the unlock engine reports per-slot
// key fetch and KDF times after the fact).
func (t *Timeline) Record(name, volume string, slot *int, start time.Time, d time.Duration, err error) {
	st := Step{Name: name, Volume: volume, Slot: slot, Start: ms(start.Sub(t.origin)), Duration: ms(d)}
	if err != nil {
		st.Err = err.Error()
	}
	t.add(st)
}

func (t *Timeline) add(st Step) {
	t.mu.Lock()
	t.steps = append(t.steps, st)
	t.mu.Unlock()
	if t.emit != nil {
		t.emit(st)
	}
}

// Steps returns a copy of the steps recorded so far, in the order they ended.
func (t *Timeline) Steps() []Step {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Step(nil), t.steps...)
}

// WriteFile writes the steps as an indented JSON array to path, creating its
// directory.
func (t *Timeline) WriteFile(path string) error {
	b, err := json.MarshalIndent(t.Steps(), "", "  ")
	if err != nil {
		return fmt.Errorf("timeline: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("timeline: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("timeline: %w", err)
	}
	return nil
}

func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Millisecond)*10) / 10
}
