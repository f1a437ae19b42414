package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// The `cryptctl luks` commands end to end, in-process on image files,
// checked against the real cryptsetup.

// luks runs `cryptctl luks ARGS` with stdin as main would and returns
// stdout, stderr and the exit code.
func luks(t *testing.T, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"luks"}, args...), bytes.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func mustLuks(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, errs, code := luks(t, stdin, args...)
	if code != 0 {
		t.Fatalf("cryptctl luks %v: exit %d: %s", args, code, errs)
	}
	return out
}

func TestLuksCmds(t *testing.T) {
	luks2test.NeedCryptsetup(t)
	img := luks2test.NewImage(t, 20<<20)
	k0, k1, k2 := luks2test.KeyFile(t, []byte("zero\n")), luks2test.KeyFile(t, []byte("one")), luks2test.KeyFile(t, []byte("two"))
	cheap := []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}

	// Bad input writes nothing.
	for _, args := range [][]string{
		{"format", img}, // no key file
		{"format", img, "--key-file", k0, "--pbkdf", "pbkdf2"}, // no explicit iterations
		{"format", img, "--key-file", k0, "--pbkdf", "scrypt"},
		{"format", img, "--key-file", k0, "--key-size", "384", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"},
		{"format", img, "--key-file", k0, "--key-slot", "32", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"},
	} {
		if _, errs, code := luks(t, nil, args...); code == 0 || errs == "" {
			t.Errorf("%v: exit %d, stderr %q; want a clear error", args, code, errs)
		}
	}
	if _, err := luks2test.Cryptsetup(t, nil, "isLuks", img); err == nil {
		t.Fatal("a refused format wrote a header")
	}

	mustLuks(t, nil, append([]string{"format", img, "--key-file", k0, "--key-size", "256", "--sector-size", "512", "--label", "STATE", "--key-slot", "2"}, cheap...)...)
	if ours, theirs := mustLuks(t, nil, "dump", img), luks2test.MustCryptsetup(t, nil, "luksDump", img); ours != theirs {
		t.Errorf("dump differs from cryptsetup luksDump:\n%s\n----\n%s", ours, theirs)
	}
	if ours, theirs := mustLuks(t, nil, "dump", "--json", img), luks2test.MustCryptsetup(t, nil, "luksDump", "--dump-json-metadata", img); !jsonEq(t, ours, theirs) {
		t.Errorf("dump --json differs from cryptsetup's JSON:\n%s\n%s", ours, theirs)
	}
	if err := luks2test.CheckKey(t, img, []byte("zero\n"), 2); err != nil {
		t.Fatalf("key file bytes not used as they are: %v", err)
	}

	// test-key: 0 when a key opens, 2 when none does.
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"test-key", img, "--key-file", k0}, 0},
		{[]string{"test-key", img, "--key-file", k0, "--key-slot", "2"}, 0},
		{[]string{"test-key", img, "--key-file", k1}, 2},
		{[]string{"test-key", img, "--key-file", k0, "--key-slot", "0"}, 1},
	} {
		if _, errs, code := luks(t, nil, c.args...); code != c.code {
			t.Errorf("%v: exit %d (%s), want %d", c.args, code, errs, c.code)
		}
	}
	// Key from stdin.
	if _, _, code := luks(t, []byte("zero\n"), "test-key", img, "--key-file", "-"); code != 0 {
		t.Errorf("test-key from stdin: exit %d", code)
	}

	// add-key by passphrase and by volume key.
	mustLuks(t, nil, append([]string{"add-key", img, "--key-file", k0, "--new-key-file", k1}, cheap...)...)
	vk := luks2test.KeyFile(t, luks2test.VolumeKey(t, img, []byte("zero\n")))
	mustLuks(t, nil, append([]string{"add-key", img, "--volume-key-file", vk, "--new-key-file", k2, "--key-slot", "9"}, cheap...)...)
	if _, errs, code := luks(t, nil, append([]string{"add-key", img, "--key-file", k2, "--new-key-file", k1, "--key-slot", "9"}, cheap...)...); code == 0 || !strings.Contains(errs, "in use") {
		t.Errorf("add-key into a used slot: exit %d %s", code, errs)
	}
	for pass, slot := range map[string]int{"one": 0, "two": 9} {
		if err := luks2test.CheckKey(t, img, []byte(pass), slot); err != nil {
			t.Errorf("cryptsetup after add-key, slot %d: %v", slot, err)
		}
	}

	// change-key re-keys slot 2 in place.
	k3 := luks2test.KeyFile(t, []byte("three"))
	mustLuks(t, nil, append([]string{"change-key", img, "--key-file", k0, "--new-key-file", k3}, cheap...)...)
	if err := luks2test.CheckKey(t, img, []byte("three"), 2); err != nil {
		t.Errorf("cryptsetup after change-key: %v", err)
	}
	if _, _, code := luks(t, nil, "test-key", img, "--key-file", k0); code != 2 {
		t.Errorf("old passphrase still opens after change-key (exit %d)", code)
	}

	// tokens
	tok := `{"type":"talos-tpm2","keyslots":["9"],"UserData":{"pcrs":[7]}}`
	mustLuks(t, []byte(tok), "token", "import", img, "--token-id", "9")
	if _, errs, code := luks(t, []byte(tok), "token", "import", img, "--token-id", "9"); code == 0 || !strings.Contains(errs, "in use") {
		t.Errorf("import over a token: exit %d %s", code, errs)
	}
	jf := luks2test.KeyFile(t, []byte(`{"type":"sideroKMS","keyslots":[],"UserData":{"sealedData":"AAEC"}}`))
	mustLuks(t, nil, "token", "import", img, "--token-id", "9", "--json-file", jf, "--replace")
	if ours, theirs := mustLuks(t, nil, "token", "export", img, "--token-id", "9"), luks2test.MustCryptsetup(t, nil, "token", "export", "--token-id", "9", img); !jsonEq(t, ours, theirs) || !strings.Contains(ours, "sideroKMS") {
		t.Errorf("token export: ours %s cryptsetup %s", ours, theirs)
	}
	mustLuks(t, nil, "token", "remove", img, "--token-id", "9")
	if _, err := luks2test.Cryptsetup(t, nil, "token", "export", "--token-id", "9", img); err == nil {
		t.Error("token still there after remove")
	}

	// remove-key; a --key-file must open another slot; never the last one.
	if _, _, code := luks(t, nil, "remove-key", img, "--key-slot", "0", "--key-file", k1); code != 2 {
		t.Errorf("remove-key with a key that only opens the removed slot: exit %d, want 2", code)
	}
	mustLuks(t, nil, "remove-key", img, "--key-slot", "0", "--key-file", k2)
	mustLuks(t, nil, "remove-key", img, "--key-slot", "9", "-q")
	if _, errs, code := luks(t, nil, "remove-key", img, "--key-slot", "2"); code == 0 || !strings.Contains(errs, "last keyslot") {
		t.Errorf("removing the last slot: exit %d %s", code, errs)
	}
	if got := csKeyslots(t, img); !slices.Equal(got, []int{2}) {
		t.Errorf("cryptsetup lists keyslots %v, want [2]", got)
	}
	mustLuks(t, nil, "flags", img, "--set", "allow-discards")
	if dump := luks2test.MustCryptsetup(t, nil, "luksDump", img); !strings.Contains(dump, "Flags:       \tallow-discards") {
		t.Errorf("flags not visible to cryptsetup")
	}
}

// csKeyslots lists the key slots cryptsetup sees in path, in order.
func csKeyslots(t testing.TB, path string) []int {
	t.Helper()
	var m struct {
		Keyslots map[string]json.RawMessage `json:"keyslots"`
	}
	if err := json.Unmarshal([]byte(luks2test.MustCryptsetup(t, nil, "luksDump", "--dump-json-metadata", path)), &m); err != nil {
		t.Fatalf("parse cryptsetup JSON dump: %v", err)
	}
	var ids []int
	for k := range m.Keyslots {
		id, err := strconv.Atoi(k)
		if err != nil {
			t.Fatalf("cryptsetup keyslot id %q: %v", k, err)
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// jsonEq reports whether a and b hold the same JSON value (numbers compared
// as written).
func jsonEq(t testing.TB, a, b string) bool {
	t.Helper()
	decode := func(s string) any {
		d := json.NewDecoder(strings.NewReader(s))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Errorf("parse JSON %q: %v", s, err)
		}
		return v
	}
	return reflect.DeepEqual(decode(a), decode(b))
}
