package vm

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RootLinePrefix starts every line printed by the real root's /sbin/init.
const RootLinePrefix = "CRYPTINIT-ROOT: "

// Mount is one filesystem the real root found mounted under /system or /var.
type Mount struct {
	Point, Source, FSType, Options string
}

// Marker is what the real root found and wrote at one mount point.
type Marker struct {
	Found int // marker value left by the previous boot; 0: none
	Wrote int // value written by this boot; 0: the write failed
}

// DMDevice is one device-mapper device seen by the real root.
type DMDevice struct {
	Kernel, Name, UUID, Slaves string
}

// Step is one entry of the init's timeline (boot/timeline's JSON objects).
type Step struct {
	Name     string  `json:"step"`
	Volume   string  `json:"volume,omitempty"`
	Slot     *int    `json:"slot,omitempty"`
	Start    float64 `json:"start_ms"`
	Duration float64 `json:"duration_ms"`
	Err      string  `json:"error,omitempty"`
}

// RootReport is what one boot proved from inside the real root.
type RootReport struct {
	Mounts   map[string]Mount  // by mount point
	Markers  map[string]Marker // by mount point
	DM       map[string]DMDevice
	Timeline []Step        // from /run/cryptinit/timeline.json, else the console lines
	Elapsed  time.Duration // QEMU start to "CRYPTINIT-ROOT: done"
}

// ParseRootReport reads the CRYPTINIT-ROOT lines (and cryptinit's timeline
// lines) out of console text.
func ParseRootReport(console string) (*RootReport, error) {
	r := &RootReport{Mounts: map[string]Mount{}, Markers: map[string]Marker{}, DM: map[string]DMDevice{}}
	var consoleSteps []Step
	done := false
	for _, line := range strings.Split(console, "\n") {
		line = strings.TrimRight(line, "\r")
		if i := strings.Index(line, "cryptinit: timeline "); i >= 0 {
			var s Step
			if json.Unmarshal([]byte(line[i+len("cryptinit: timeline "):]), &s) == nil {
				consoleSteps = append(consoleSteps, s)
			}
			continue
		}
		rest, ok := strings.CutPrefix(line, RootLinePrefix)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "mount":
			if len(f) >= 5 {
				r.Mounts[f[1]] = Mount{Point: f[1], Source: f[2], FSType: f[3], Options: f[4]}
			}
		case "marker":
			if len(f) >= 3 {
				m := r.Markers[f[1]]
				switch f[2] {
				case "found":
					if len(f) >= 4 {
						m.Found, _ = strconv.Atoi(f[3])
					}
				case "wrote":
					if len(f) >= 4 {
						m.Wrote, _ = strconv.Atoi(f[3])
					}
				}
				r.Markers[f[1]] = m
			}
		case "dm":
			if len(f) >= 3 {
				d := DMDevice{Kernel: f[1]}
				for _, kv := range f[2:] {
					k, v, _ := strings.Cut(kv, "=")
					switch k {
					case "name":
						d.Name = v
					case "uuid":
						d.UUID = v
					case "slaves":
						d.Slaves = v
					}
				}
				r.DM[d.Name] = d
			}
		case "timeline":
			var steps []Step
			if err := json.Unmarshal([]byte(strings.TrimPrefix(rest, "timeline ")), &steps); err == nil {
				r.Timeline = steps
			}
		case "done":
			done = true
		}
	}
	if r.Timeline == nil {
		r.Timeline = consoleSteps
	}
	if !done {
		return r, fmt.Errorf("vm: the real root did not finish (no %sdone line)", RootLinePrefix)
	}
	return r, nil
}

// Mounted reports whether mount point holds a dm-crypt mapping named mapper
// (e.g. luks2-STATE), judged from the mount source.
func (r *RootReport) Mounted(point, mapper string) error {
	m, ok := r.Mounts[point]
	if !ok {
		return fmt.Errorf("%s is not mounted (mounts: %v)", point, r.points())
	}
	if mapper != "" && !strings.HasSuffix(m.Source, "/"+mapper) {
		if d, ok := r.DM[mapper]; !ok || !strings.HasSuffix(m.Source, "/"+d.Kernel) {
			return fmt.Errorf("%s is mounted from %s, want /dev/mapper/%s", point, m.Source, mapper)
		}
	}
	return nil
}

func (r *RootReport) points() []string {
	var p []string
	for k := range r.Mounts {
		p = append(p, k)
	}
	return p
}

// Split divides the boot's wall-clock time, init start to switch_root, by
// kind of work, in milliseconds: "kdf" (LUKS2 keyslot KDFs, and typed
// passphrases), "mkfs", "wait" (waiting for the partitions), "key"
// (fetching keys: unseal, KMS), "modules" (time the boot is blocked on
// modules), "other" (the rest) and "total". Volumes unlock concurrently, so
// steps overlap: each moment counts once, for the first of those kinds
// (in that order) that is under way then, so the parts add up to the total.
// The init reports "key-fetch" and "kdf" inside each "key" step; timelines
// from before that split count the whole "key" step as kdf. "unlock", "key"
// (when split) and "modules-background" contain other steps or run off the
// critical path and are not counted.
func (r *RootReport) Split() map[string]float64 {
	split := false
	for _, s := range r.Timeline {
		if s.Name == "kdf" {
			split = true
			break
		}
	}
	total := r.SwitchRootAt()
	type span struct {
		start, end float64
		rank       int
	}
	var spans []span
	cuts := []float64{0, total}
	for _, s := range r.Timeline {
		c := category(s.Name, split)
		if c == "" {
			continue
		}
		start, end := max(0, s.Start), min(total, s.Start+s.Duration)
		if end <= start {
			continue
		}
		spans = append(spans, span{start, end, slices.Index(splitOrder, c)})
		cuts = append(cuts, start, end)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	out := map[string]float64{}
	for i := 0; i+1 < len(cuts); i++ {
		a, b := cuts[i], cuts[i+1]
		best := len(splitOrder)
		for _, sp := range spans {
			if sp.start <= a && b <= sp.end && sp.rank < best {
				best = sp.rank
			}
		}
		kind := "other"
		if best < len(splitOrder) {
			kind = splitOrder[best]
		}
		out[kind] += b - a
	}
	for k, v := range out {
		out[k] = math.Round(v*10) / 10
	}
	if total > 0 {
		out["total"] = total
		if _, ok := out["other"]; !ok {
			out["other"] = 0
		}
	}
	return out
}

// splitOrder ranks the kinds of work Split counts: a moment when several
// are under way counts for the first.
var splitOrder = []string{"kdf", "mkfs", "wait", "key", "modules"}

// category names the kind of work a timeline step is; split says whether
// the timeline has separate key-fetch and kdf steps inside "key".
func category(step string, split bool) string {
	switch step {
	case "kdf", "prompt-kdf":
		return "kdf"
	case "key":
		if split {
			return ""
		}
		return "kdf"
	case "key-fetch":
		return "key"
	case "mkfs":
		return "mkfs"
	case "devices":
		return "wait"
	case "modules", "modules-wait", "modules-network":
		return "modules"
	default:
		return ""
	}
}

// SwitchRootAt is when (ms since the init started) it reached switch_root:
// the start of the "switch_root" step, else the end of the last step.
func (r *RootReport) SwitchRootAt() float64 {
	end := 0.0
	for _, s := range r.Timeline {
		if s.Name == "switch_root" {
			return s.Start
		}
		end = max(end, s.Start+s.Duration)
	}
	return end
}
