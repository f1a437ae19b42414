package unlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// The fault matrix (issue 10, "Beyond the defects"): every key kind x
// {opens, unavailable, wrong, timeout, garbage token} x {journal clean,
// pending before header, pending after header, pending after token} x
// {alone, with a static key that opens} x {no I/O error, a read error at
// each read, a write error at each write, a torn write at each write} on a
// finished volume; plus the shapes an interrupted format leaves (no
// header, header without its token) under every fault up to the re-format.
// For each case: the data area never changes; a finished volume is never
// wiped, and is left byte for byte as it was unless a key opened it; every
// erasing write has its log line; META's other tags stay as they were;
// every key that opened the volume before still opens it (with the same
// volume key) unless the sync was asked to replace it; and a finished
// volume still opens on the next boot without faults.

const (
	fmSize     = 18 << 20 // 16 MiB LUKS2 header area, 1 MiB data, the last MiB
	fmDataOff  = 16 << 20
	fmDataEnd  = fmSize - 1<<20
	fmPage     = 64 << 10
	fmOther    = "user value in tag 13"
	fmVolumeID = "EPHEMERAL"
)

var (
	errFMRead  = errors.New("injected read error")
	errFMWrite = errors.New("injected write error")
)

// fmFaults is one case's fault plan, shared by the volume and META so that
// reads and writes are counted across both.
type fmFaults struct {
	mu      sync.Mutex
	readAt  int // fail this read (counted from 0); -1: none
	writeAt int // fail this write and every later one; -1: none
	torn    bool
	reads   int
	readOff []int64 // offset of each read (volume: >= 0; META: -1-off)
	writes  int
	dead    bool
	erased  bool // a write of 64 KiB or more of zeros hit the volume
}

// fmDev is a copy-on-write device over a shared base image.
type fmDev struct {
	base  []byte
	pages map[int64][]byte
	f     *fmFaults
	vol   bool
}

func newFMDev(base []byte, f *fmFaults, vol bool) *fmDev {
	return &fmDev{base: base, pages: map[int64][]byte{}, f: f, vol: vol}
}

func (d *fmDev) ReadAt(p []byte, off int64) (int, error) {
	d.f.mu.Lock()
	i := d.f.reads
	d.f.reads++
	if d.vol {
		d.f.readOff = append(d.f.readOff, off)
	} else {
		d.f.readOff = append(d.f.readOff, -1-off)
	}
	fail := i == d.f.readAt
	d.f.mu.Unlock()
	if fail {
		return 0, errFMRead
	}
	return d.read(p, off)
}

func (d *fmDev) read(p []byte, off int64) (int, error) {
	if off >= int64(len(d.base)) {
		return 0, fmt.Errorf("read at %d: past the end", off)
	}
	n := 0
	for n < len(p) && off+int64(n) < int64(len(d.base)) {
		o := off + int64(n)
		pg, in := o/fmPage, o%fmPage
		src := d.base[pg*fmPage : min(int64(len(d.base)), (pg+1)*fmPage)]
		if w, ok := d.pages[pg]; ok {
			src = w
		}
		n += copy(p[n:], src[in:])
	}
	if n < len(p) {
		return n, fmt.Errorf("read at %d: short", off)
	}
	return n, nil
}

func (d *fmDev) WriteAt(p []byte, off int64) (int, error) {
	d.f.mu.Lock()
	i := d.f.writes
	d.f.writes++
	if d.f.dead {
		d.f.mu.Unlock()
		return 0, errFMWrite
	}
	if i == d.f.writeAt {
		d.f.dead = true
		torn := d.f.torn
		d.f.mu.Unlock()
		if torn {
			// the first half reaches the disk, cut at a 512-byte sector
			h := len(p) / 2 &^ 511
			d.write(p[:h], off)
		}
		return 0, errFMWrite
	}
	if d.vol && len(p) >= 64<<10 && !bytes.ContainsFunc(p, func(r rune) bool { return r != 0 }) {
		d.f.erased = true
	}
	d.f.mu.Unlock()
	return d.write(p, off)
}

func (d *fmDev) write(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > int64(len(d.base)) {
		return 0, fmt.Errorf("write at %d: past the end", off)
	}
	for n := 0; n < len(p); {
		o := off + int64(n)
		pg, in := o/fmPage, o%fmPage
		w, ok := d.pages[pg]
		if !ok {
			w = bytes.Clone(d.base[pg*fmPage : min(int64(len(d.base)), (pg+1)*fmPage)])
			d.pages[pg] = w
		}
		n += copy(w[in:], p[n:])
	}
	return len(p), nil
}

func (d *fmDev) Sync() error {
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	if d.f.dead {
		return errFMWrite
	}
	return nil
}

// changed reports whether [from, to) differs from the base.
func (d *fmDev) changed(from, to int64) bool {
	for pg, w := range d.pages {
		lo, hi := max(from, pg*fmPage), min(to, pg*fmPage+int64(len(w)))
		if lo < hi && !bytes.Equal(w[lo-pg*fmPage:hi-pg*fmPage], d.base[lo:hi]) {
			return true
		}
	}
	return false
}

// fork is a copy of the device with faults f.
func (d *fmDev) fork(f *fmFaults) *fmDev {
	n := newFMDev(d.base, f, d.vol)
	for pg, w := range d.pages {
		n.pages[pg] = bytes.Clone(w)
	}
	return n
}

// image returns the device's bytes as a new base.
func (d *fmDev) image() []byte {
	b := bytes.Clone(d.base)
	for pg, w := range d.pages {
		copy(b[pg*fmPage:], w)
	}
	return b
}

// fmFree is a fault plan with no faults.
func fmFree() *fmFaults { return &fmFaults{readAt: -1, writeAt: -1} }

// The fakes behind each key kind, set to one outcome.
type fmOutcome string

const (
	fmOpens       fmOutcome = "opens"
	fmUnavailable fmOutcome = "unavailable"
	fmWrong       fmOutcome = "wrong"
	fmTimeout     fmOutcome = "timeout"
	fmGarbage     fmOutcome = "garbage token"
)

func block(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

type fmUUID struct{ o fmOutcome }

func (u fmUUID) NodeUUID(ctx context.Context) (string, error) {
	switch u.o {
	case fmUnavailable:
		return "", errors.New("no DMI product UUID")
	case fmWrong:
		return "11111111-2222-4333-8444-555555555555", nil
	case fmTimeout:
		return "", block(ctx)
	}
	return testUUID, nil
}

type fmKMS struct{ o fmOutcome }

func (k fmKMS) Seal(_ context.Context, _, node string, data []byte) ([]byte, error) {
	return append([]byte(node+"|"), data...), nil
}

func (k fmKMS) Unseal(ctx context.Context, _, node string, sealed []byte) ([]byte, error) {
	switch k.o {
	case fmUnavailable:
		return nil, errors.New("connection refused")
	case fmWrong:
		return []byte("not the key"), nil
	case fmTimeout:
		return nil, block(ctx)
	}
	if !bytes.HasPrefix(sealed, []byte(node+"|")) {
		return nil, errors.New("denied")
	}
	return bytes.Clone(sealed[len(node)+1:]), nil
}

type fmTPM struct{ o fmOutcome }

func (f fmTPM) Seal(_ context.Context, secret []byte, pcrs []int) (*tpm.Sealed, error) {
	return (&fakeTPM{}).Seal(context.Background(), secret, pcrs)
}

func (f fmTPM) Unseal(ctx context.Context, s *tpm.Sealed) ([]byte, error) {
	switch f.o {
	case fmUnavailable:
		return nil, errors.New("TPM_RC_INTEGRITY")
	case fmWrong:
		return []byte("not the key"), nil
	case fmTimeout:
		return nil, block(ctx)
	}
	return bytes.Clone(s.Private), nil
}

type fmSalt struct{ o fmOutcome }

func (s fmSalt) Salt(ctx context.Context) ([]byte, error) {
	switch s.o {
	case fmUnavailable:
		return nil, errors.New("no salt on STATE")
	case fmWrong:
		return bytes.Repeat([]byte{2}, 32), nil
	case fmTimeout:
		return nil, block(ctx)
	}
	return bytes.Repeat([]byte{1}, 32), nil
}

// fmKind is a key kind: its config line (the passphrase for static) and
// which outcomes it can have (a static key is never unavailable).
type fmKind struct {
	name     string
	token    bool // the key needs its token to open
	key      func(o fmOutcome) string
	outcomes []fmOutcome
}

var fmAll = []fmOutcome{fmOpens, fmUnavailable, fmWrong, fmTimeout, fmGarbage}

var fmKinds = []fmKind{
	{"static", false, func(o fmOutcome) string { return "static: {passphrase: " + staticPass(o) + "}" }, []fmOutcome{fmOpens, fmWrong, fmGarbage}},
	{"static recovery", false, func(o fmOutcome) string { return "static: {passphrase: " + staticPass(o) + "}, recovery: true" }, []fmOutcome{fmOpens, fmWrong, fmGarbage}},
	{"nodeID", false, func(fmOutcome) string { return "nodeID: {}" }, fmAll},
	{"kms", true, func(fmOutcome) string { return "kms: {endpoint: grpc://kms:1}" }, fmAll},
	{"tpm", true, func(fmOutcome) string { return "tpm: {options: {pcrs: [7]}}" }, fmAll},
	{"nodeID lockToSTATE", false, func(fmOutcome) string { return "nodeID: {}, lockToSTATE: true" }, fmAll},
}

func staticPass(o fmOutcome) string {
	if o == fmWrong {
		return "wrong"
	}
	return "right"
}

// fmVolume is the parsed fmConfig, parsed once.
func fmVolume(t testing.TB, k fmKind, o fmOutcome, backup bool) config.Volume {
	key := fmt.Sprint(k.name, o, backup)
	fmVolumesMu.Lock()
	defer fmVolumesMu.Unlock()
	v, ok := fmVolumes[key]
	if !ok {
		v = volume(t, fmConfig(t, k, o, backup), fmVolumeID)
		fmVolumes[key] = v
	}
	e := *v.Encryption
	e.Keys = append([]config.Key(nil), e.Keys...)
	v.Encryption = &e
	return v
}

var (
	fmVolumesMu sync.Mutex
	fmVolumes   = map[string]config.Volume{}
)

func fmConfig(t testing.TB, k fmKind, o fmOutcome, backup bool) string {
	y := "kind: VolumeConfig\nname: " + fmVolumeID + "\nencryption:\n  keys:\n    - {slot: 0, " + k.key(o) + "}\n"
	if backup {
		y += "    - {slot: 1, static: {passphrase: backup}}\n"
	}
	return y + "  kdf: {type: pbkdf2, iterations: 1000}\n"
}

// fmEngine is the engine of a machine where the kind's key has outcome o
// (o's fake misbehaves; the others work).
func fmEngine(o fmOutcome, j FormatJournal, log *bytes.Buffer) *Engine {
	e := &Engine{Env: keys.Env{NodeUUID: fmUUID{o}, KMS: fmKMS{o}, TPM: fmTPM{o}, Salt: fmSalt{o}},
		KeyTimeout: 3 * time.Millisecond, Journal: j, digestIterations: 1000}
	if log != nil {
		e.Log = logTo(log)
	}
	return e
}

// fmShape is a volume as a boot finds it: bytes, META bytes, and what
// opens it.
type fmShape struct {
	name     string
	vol      []byte
	meta     []byte
	finished bool   // a complete format: must never be wiped
	vk       []byte // volume key (finished shapes)
	backup   bool
}

func fmMeta(t testing.TB, rec *meta.Record) []byte {
	m := meta.New()
	m.Set(meta.TagUserReserved2, []byte(fmOther))
	if rec != nil {
		// a record as our format leaves it at that stage
		b := make(memMeta, meta.Size)
		m.Write(b)
		j := &meta.Journal{Dev: b}
		if err := j.Begin(*rec); err != nil {
			t.Fatal(err)
		}
		if rec.Stage != meta.StageBegun {
			if err := j.Advance(rec.Volume, rec.Stage); err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	b := make(memMeta, meta.Size)
	if err := m.Write(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// fmFormat formats a fresh image with the kind's working key (and the
// backup); it returns the image, its UUID, volume key and whether slot 0
// has a token.
func fmFormat(t testing.TB, k fmKind, backup bool) ([]byte, string, []byte, bool) {
	vol := fmVolume(t, k, fmOpens, backup)
	d := newFMDev(make([]byte, fmSize), fmFree(), true)
	res, err := fmEngine(fmOpens, nil, nil).Unlock(ctx, vol, d, fmSize)
	if err != nil {
		t.Fatalf("%s: format: %v", k.name, err)
	}
	img := d.image()
	h, err := luks2.ReadHeader(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	_, tok := h.Tokens[0]
	// data in the data area, to see that it survives
	copy(img[fmDataOff:], bytes.Repeat([]byte("data "), 1000))
	return img, h.UUID, bytes.Clone(res.VolumeKey), tok
}

func withGarbageToken(t testing.TB, img []byte) []byte {
	d := newFMDev(img, fmFree(), true)
	if _, err := luks2.ImportToken(d, 0, []byte(`{"type":"garbage","keyslots":[],"x":"\u0000"}`), true); err != nil {
		t.Fatal(err)
	}
	return d.image()
}

func TestFaultMatrix(t *testing.T) {
	start := time.Now()
	var mu sync.Mutex
	cases, counts := 0, map[string]int{}
	count := func(what string, n int) {
		mu.Lock()
		cases += n
		counts[what] += n
		mu.Unlock()
	}
	t.Run("kinds", func(t *testing.T) {
		for _, k := range fmKinds {
			t.Run(k.name, func(t *testing.T) {
				t.Parallel()
				fmKindCases(t, k, count)
			})
		}
	})
	t.Logf("fault matrix: %d cases in %v (%v)", cases, time.Since(start).Round(time.Millisecond), counts)
	fmt.Printf("fault matrix: %d cases\n", cases)
	if cases < 2000 && !t.Failed() {
		t.Fatalf("only %d cases", cases)
	}
}

// fmKindCases runs every case of one key kind.
func fmKindCases(t *testing.T, k fmKind, count func(string, int)) {
	for _, backup := range []bool{false, true} {
		img, uuid, vk, tok := fmFormat(t, k, backup)
		garbage := withGarbageToken(t, img)
		for _, stage := range []string{"", meta.StageBegun, meta.StageHeader, meta.StageToken} {
			var rec *meta.Record
			if stage != "" {
				rec = &meta.Record{Volume: fmVolumeID, UUID: uuid, Slot: 0, Token: tok, Stage: stage}
			}
			m := fmMeta(t, rec)
			for _, o := range k.outcomes {
				s := fmShape{name: fmt.Sprintf("%s backup=%v journal=%q %s", k.name, backup, stage, o),
					vol: img, meta: m, finished: true, vk: vk, backup: backup}
				if o == fmGarbage {
					s.vol = garbage
				}
				count(string(o), fmRun(t, k, o, s))
			}
		}
	}
	// what an interrupted format leaves: no header (the keyslot area
	// written), and for a kind with a token the header without it
	img, uuid, _, tok := fmFormat(t, k, false)
	noHeader := bytes.Clone(img)
	clear(noHeader[:32<<10])
	clear(noHeader[fmDataOff:]) // a format that never finished holds no data
	shapes := []fmShape{{name: k.name + " no header, journal begun", vol: noHeader,
		meta: fmMeta(t, &meta.Record{Volume: fmVolumeID, UUID: uuid, Slot: 0, Token: tok, Stage: meta.StageBegun})}}
	if tok {
		d := newFMDev(img, fmFree(), true)
		if err := luks2.RemoveToken(d, 0); err != nil {
			t.Fatal(err)
		}
		noToken := d.image()
		clear(noToken[fmDataOff:])
		shapes = append(shapes, fmShape{name: k.name + " header without token, journal header", vol: noToken,
			meta: fmMeta(t, &meta.Record{Volume: fmVolumeID, UUID: uuid, Slot: 0, Token: true, Stage: meta.StageHeader})})
	}
	for _, s := range shapes {
		count("unfinished", fmRun(t, k, fmOpens, s))
	}
}

// fmRun runs one shape under no fault, then a read error at each read and a
// failed and a torn write at each write the fault-free run makes (for an
// unfinished shape: up to the first write of the new keyslot area, which
// TestFormatCrashResumes covers beyond). It returns the number of cases.
func fmRun(t *testing.T, k fmKind, o fmOutcome, s fmShape) int {
	vol := fmVolume(t, k, o, s.backup)
	free := fmCase(t, k, o, s, vol, fmFree())
	if t.Failed() {
		t.FailNow()
	}
	n := 1
	writes := free.writes
	if !s.finished && free.firstFill >= 0 {
		writes = free.firstFill + 1
	}
	// a read error at each offset read (its first read there)
	seen := map[int64]bool{}
	for i, off := range free.reads {
		if !seen[off] {
			seen[off] = true
			fmCase(t, k, o, s, vol, &fmFaults{readAt: i, writeAt: -1})
			n++
		}
	}
	for i := 0; i < writes; i++ {
		for _, torn := range []bool{false, true} {
			fmCase(t, k, o, s, vol, &fmFaults{readAt: -1, writeAt: i, torn: torn})
			n++
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return n
}

type fmCounts struct {
	reads     []int64 // offset of each read
	writes    int
	firstFill int // index of the first 1 MiB keyslot-area write; -1: none
}

// fmCase runs one boot of one case and checks what it left.
func fmCase(t *testing.T, k fmKind, o fmOutcome, s fmShape, vol config.Volume, f *fmFaults) fmCounts {
	name := fmt.Sprintf("%s, faults {read %d, write %d, torn %v}", s.name, f.readAt, f.writeAt, f.torn)
	fill := &fillWatch{f: f, at: -1}
	d := newFMDev(s.vol, f, true)
	md := newFMDev(s.meta, f, false)
	var log bytes.Buffer
	j := &meta.Journal{Dev: md}
	res, err := fmEngine(o, j, &log).Unlock(ctx, vol, fill.wrap(d), fmSize)
	opened := err == nil && !res.Formatted
	// the sync replaced slot 0 (or tried to): the config asked for a new
	// key there, as when the key no longer opens it
	replaced0 := false
	if res != nil {
		res.Zero()
		if res.Sync != nil {
			replaced0 = slices.Contains(res.Sync.Replaced, 0)
			for _, p := range res.Sync.Problems {
				replaced0 = replaced0 || strings.Contains(p.Error(), "slot 0 ")
			}
		}
	}
	// which keys opened the shape's bytes before this boot: slot 0's
	// working key unless its token is garbage, and the static backup
	before0 := !(o == fmGarbage && k.token)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("%s: "+format+"\nerr: %v\nlog:\n%s", append([]any{name}, append(args, err, log.String())...)...)
	}

	if d.changed(fmDataOff, fmDataEnd) {
		fail("the data area changed")
	}
	if f.erased && !(strings.Contains(log.String(), "redoing an interrupted format") &&
		strings.Contains(log.String(), "volume="+fmVolumeID) && strings.Contains(log.String(), "erased=")) {
		fail("a wipe without its log line")
	}
	if s.finished && f.erased {
		fail("a finished volume was wiped")
	}
	if s.finished && !opened && d.changed(0, fmSize) {
		fail("no key opened, yet the volume was written")
	}
	if m, merr := meta.Read(md); merr == nil {
		if v, _ := m.Get(meta.TagUserReserved2); string(v) != fmOther {
			fail("META tag 13 became %q", v)
		}
	}
	if f.readAt < 0 && f.writeAt < 0 && s.finished {
		// no fault: the outcome is the key's
		keyOpens := o == fmOpens || (o == fmGarbage && !k.token) || s.backup
		switch {
		case keyOpens && !opened:
			fail("did not open")
		case !keyOpens && !errors.Is(err, ErrNoKeyOpens):
			fail("want a refusal: no key opens")
		}
		if r, _ := j.Record(fmVolumeID); (r == nil) != (opened || s.meta == nil || !hasRecord(s.meta)) {
			fail("journal record after the boot: %+v", r)
		}
	}

	// the next boot, without faults, with every key working
	// nothing reached the disks: the bytes are the shape's, checked by its
	// fault-free case
	unchanged := !d.changed(0, fmSize) && !md.changed(0, meta.Size)
	if s.finished && (before0 || s.backup) && (!unchanged || (f.readAt < 0 && f.writeAt < 0)) {
		if s.backup {
			// the static key that opened before still opens, to the same
			// volume key
			wk := fmVolume(t, k, fmOpens, true)
			wk.Encryption.Keys = wk.Encryption.Keys[1:]
			if r, oerr := fmEngine(fmOpens, nil, nil).Open(ctx, wk, d.fork(fmFree())); oerr != nil {
				fail("slot 1 (backup) no longer opens: %v", oerr)
			} else {
				if !bytes.Equal(r.VolumeKey, s.vk) {
					fail("slot 1 opens with another volume key")
				}
				r.Zero()
			}
		}
		// the next boot: slot 0's key opens first (slot order), to the
		// same volume key, and clears any record
		nf := fmFree()
		nd, nm := d.fork(nf), md.fork(nf)
		r, nerr := fmEngine(fmOpens, &meta.Journal{Dev: nm}, nil).Unlock(ctx,
			fmVolume(t, k, fmOpens, s.backup), nd, fmSize)
		if nerr != nil || r.Formatted || !bytes.Equal(r.VolumeKey, s.vk) {
			fail("next boot: %v", nerr)
		} else if before0 && r.Slot != 0 && !replaced0 {
			fail("next boot: slot 0's key no longer opens (opened by slot %d; %v)", r.Slot, r.Attempts)
		} else if rec, _ := (&meta.Journal{Dev: nm}).Record(fmVolumeID); rec != nil {
			fail("next boot left the record %+v", rec)
		}
		if r != nil {
			r.Zero()
		}
	}
	return fmCounts{reads: f.readOff, writes: f.writes, firstFill: fill.at}
}

func hasRecord(m []byte) bool {
	r, _ := (&meta.Journal{Dev: memMeta(bytes.Clone(m))}).Record(fmVolumeID)
	return r != nil
}

// fillWatch notes the index of the first 1 MiB write into the keyslot area
// (the new format's random fill).
type fillWatch struct {
	f  *fmFaults
	at int
}

func (w *fillWatch) wrap(d *fmDev) luks2.Device { return fillDev{d, w} }

type fillDev struct {
	*fmDev
	w *fillWatch
}

func (d fillDev) WriteAt(p []byte, off int64) (int, error) {
	if d.w.at < 0 && len(p) == 1<<20 && off == 32<<10 {
		d.w.f.mu.Lock()
		d.w.at = d.w.f.writes
		d.w.f.mu.Unlock()
	}
	return d.fmDev.WriteAt(p, off)
}
