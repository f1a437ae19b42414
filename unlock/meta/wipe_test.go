package meta

import (
	"errors"
	"strings"
	"testing"
)

const (
	partA = "0fc63daf-8483-4772-8e79-3d69d8477de4"
	partB = "a19d880f-05fc-4d3b-a006-743f0f84911e"
	luksA = "6b3c5e0a-9d21-4f7e-8c44-2a1f9b7d0e53"
	luksB = "11111111-2222-4333-8444-555555555555"
)

func TestWipeRequestMatches(t *testing.T) {
	for _, c := range []struct {
		name  string
		req   WipeRequest
		found Partition
		want  bool
	}{
		{"partuuid", WipeRequest{PartUUID: partA}, Partition{PartUUID: partA}, true},
		{"partuuid any case", WipeRequest{PartUUID: strings.ToUpper(partA)}, Partition{PartUUID: partA, LUKSUUID: luksA}, true},
		{"other partuuid", WipeRequest{PartUUID: partA}, Partition{PartUUID: partB, LUKSUUID: luksA}, false},
		{"partuuid unknown", WipeRequest{PartUUID: partA}, Partition{LUKSUUID: luksA}, false},
		{"luks", WipeRequest{LUKSUUID: luksA}, Partition{LUKSUUID: luksA}, true},
		{"other luks", WipeRequest{LUKSUUID: luksA}, Partition{PartUUID: partA, LUKSUUID: luksB}, false},
		{"no luks header", WipeRequest{LUKSUUID: luksA}, Partition{PartUUID: partA}, false},
		{"both", WipeRequest{PartUUID: partA, LUKSUUID: luksA}, Partition{PartUUID: partA, LUKSUUID: luksA}, true},
		{"both, luks differs", WipeRequest{PartUUID: partA, LUKSUUID: luksA}, Partition{PartUUID: partA, LUKSUUID: luksB}, false},
		{"both, partuuid differs", WipeRequest{PartUUID: partA, LUKSUUID: luksA}, Partition{PartUUID: partB, LUKSUUID: luksA}, false},
		{"no target", WipeRequest{}, Partition{}, false},
		{"no target, something found", WipeRequest{}, Partition{PartUUID: partA, LUKSUUID: luksA}, false},
	} {
		c.req.Volume = "EPHEMERAL"
		if got := c.req.Matches(c.found); got != c.want {
			t.Errorf("%s: Matches = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestWipeRequestRecord(t *testing.T) {
	m := New()
	if reqs, err := WipeRequests(m); reqs != nil || err != nil {
		t.Fatalf("unset: %v %v", reqs, err)
	}
	for _, bad := range []WipeRequest{
		{Volume: "EPHEMERAL"},                // no target
		{Volume: "META", PartUUID: partA},    // not a volume
		{Volume: "u-", PartUUID: partA},      // no name
		{Volume: "foo bar", LUKSUUID: luksA}, // not a volume
	} {
		if err := RequestWipe(m, bad); err == nil {
			t.Errorf("RequestWipe(%+v) accepted", bad)
		}
	}
	if _, ok := m.Get(TagWipeRequest); ok {
		t.Fatal("a refused request was stored")
	}
	must(t, RequestWipe(m, WipeRequest{Volume: "EPHEMERAL", PartUUID: strings.ToUpper(partA)}))
	must(t, RequestWipe(m, WipeRequest{Volume: "u-data", LUKSUUID: luksA}))
	must(t, RequestWipe(m, WipeRequest{Volume: "EPHEMERAL", PartUUID: partB})) // replaces
	v, _ := m.Get(TagWipeRequest)
	want := `{"version":1,"requests":[{"volume":"u-data","luksUUID":"` + luksA + `"},{"volume":"EPHEMERAL","partUUID":"` + partB + `"}]}`
	if string(v) != want {
		t.Fatalf("tag %#x = %s\nwant %s", TagWipeRequest, v, want)
	}
	if _, ok := m.Get(TagLegacyWipeRequest); ok {
		t.Fatal("the request went to the users' tag 12")
	}
	if ok, err := CancelWipe(m, "EPHEMERAL"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if ok, _ := CancelWipe(m, "EPHEMERAL"); ok {
		t.Fatal("cancelled twice")
	}
	if ok, _ := CancelWipe(m, "u-data"); !ok {
		t.Fatal("u-data not cancelled")
	}
	if _, ok := m.Get(TagWipeRequest); ok {
		t.Fatal("an empty request tag was kept")
	}

	// records this version cannot read are never acted on
	for _, v := range []string{
		"EPHEMERAL",
		`{"version":2,"requests":[{"volume":"EPHEMERAL","partUUID":"` + partA + `"}]}`,
		`{"version":1,"requests":[{"volume":"EPHEMERAL"}]}`,
		`{"version":1,"requests":[{"volume":"EPHEMERAL","partUUID":"` + partA + `","extra":1}]}`,
	} {
		m.Set(TagWipeRequest, []byte(v))
		if reqs, err := WipeRequests(m); err == nil {
			t.Errorf("%s: read as %v", v, reqs)
		}
		img := written(t, m)
		before := string(img)
		if r, err := ConsumeWipeRequest(img, "EPHEMERAL", Partition{PartUUID: partA}); r != nil || err == nil {
			t.Errorf("%s: consumed %v, %v", v, r, err)
		}
		if string(img) != before {
			t.Errorf("%s: META rewritten", v)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestConsumeWipeRequest: a request is taken (and META written without it)
// only when it targets the partition found; one for another partition
// leaves META byte for byte as it was and says what it targets and what the
// disk has.
func TestConsumeWipeRequest(t *testing.T) {
	img := make(image, Size)
	if r, err := ConsumeWipeRequest(img, "EPHEMERAL", Partition{PartUUID: partA}); r != nil || err != nil {
		t.Fatalf("blank META: %v %v", r, err)
	}
	m := New()
	m.Set(TagUserReserved1, []byte("EPHEMERAL\n"))
	must(t, RequestWipe(m, WipeRequest{Volume: "EPHEMERAL", PartUUID: partA}))
	must(t, RequestWipe(m, WipeRequest{Volume: "u-data", LUKSUUID: luksA}))
	img = written(t, m)
	before := string(img)

	r, err := ConsumeWipeRequest(img, "EPHEMERAL", Partition{PartUUID: partB, LUKSUUID: luksA})
	var mm *WipeMismatchError
	if r != nil || !errors.As(err, &mm) {
		t.Fatalf("mismatch: %v %v", r, err)
	}
	for _, s := range []string{"EPHEMERAL", "PARTUUID=" + partA, "PARTUUID=" + partB, "LUKS UUID=" + luksA, "cancel-wipe"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("mismatch message lacks %q: %v", s, err)
		}
	}
	if string(img) != before {
		t.Fatal("a request that does not match rewrote META")
	}
	if r, err := ConsumeWipeRequest(img, "STATE", Partition{PartUUID: partA}); r != nil || err != nil {
		t.Fatalf("no request for STATE: %v %v", r, err)
	}

	r, err = ConsumeWipeRequest(img, "EPHEMERAL", Partition{PartUUID: partA})
	if err != nil || r == nil || r.Volume != "EPHEMERAL" || r.PartUUID != partA {
		t.Fatalf("match: %+v %v", r, err)
	}
	if r, _ := ConsumeWipeRequest(img, "EPHEMERAL", Partition{PartUUID: partA}); r != nil {
		t.Fatal("request consumed twice")
	}
	after, _ := Read(img)
	reqs, err := WipeRequests(after)
	if err != nil || len(reqs) != 1 || reqs[0].Volume != "u-data" {
		t.Fatalf("left %v %v", reqs, err)
	}
	if v, _ := after.Get(TagUserReserved1); string(v) != "EPHEMERAL\n" {
		t.Fatalf("tag 12 = %q", v)
	}
}

func TestLegacyWarnings(t *testing.T) {
	for _, c := range []struct {
		tag   uint32
		value string
		warn  string // "" for none
	}{
		{12, "STATE\n", "tag 12 holds \"STATE\""},
		{12, "EPHEMERAL\nu-data", "tag 12 holds \"EPHEMERAL,u-data\""},
		{13, "u-data\n", "tag 13 holds \"u-data\""},
		{12, "my own data", ""},
		{12, "STATE\nsomething else", ""},
		{12, "", ""},
		{13, "\n\n", ""},
		{14, "STATE", ""}, // never ours
	} {
		m := New()
		m.Set(c.tag, []byte(c.value))
		w := LegacyWarnings(m)
		if c.warn == "" {
			if len(w) != 0 {
				t.Errorf("tag %d %q: warned %v", c.tag, c.value, w)
			}
			continue
		}
		if len(w) != 1 || !strings.Contains(w[0], c.warn) || !strings.Contains(w[0], "ignored") ||
			!strings.Contains(w[0], "cryptctl meta delete --tag") {
			t.Errorf("tag %d %q: warned %v", c.tag, c.value, w)
		}
		if c.tag == 12 && !strings.Contains(w[0], "cryptctl meta request-wipe") {
			t.Errorf("tag 12: no re-request hint: %v", w)
		}
		if v, _ := m.Get(c.tag); string(v) != c.value {
			t.Errorf("tag %d altered", c.tag)
		}
	}
}

// cryptinit's tags must be ones Talos reads as themselves (it reads a tag
// as one byte) and never assigns (6-18 today; 0-32 kept clear for it).
func TestOwnTagsOutsideTalos(t *testing.T) {
	for _, tag := range []uint32{TagWipeRequest, TagFormatJournal} {
		if tag > 0xff || tag <= 32 {
			t.Errorf("tag %#x: outside 33..255", tag)
		}
	}
}
