package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// A mistyped META path is an error for every meta subcommand, and no file
// appears under that name.
func TestMetaNeverCreatesAFile(t *testing.T) {
	for _, args := range [][]string{
		{"list"},
		{"get", "--tag", "15"},
		{"set", "--tag", "15", "--value", "x"},
		{"delete", "--tag", "15"},
		{"request-wipe", "--volume", "EPHEMERAL", "--partuuid", ephPartUUID},
		{"cancel-wipe", "--volume", "EPHEMERAL"},
	} {
		t.Run(args[0], func(t *testing.T) {
			missing := filepath.Join(t.TempDir(), "meta.iimg")
			_, err := cryptctl(t, append(append([]string{"meta"}, args...), missing)...)
			if err == nil || !strings.Contains(err.Error(), "never creates a META") {
				t.Errorf("meta %s on a missing path: %v; want an error that says no file is created", args[0], err)
			}
			if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("meta %s created %s (%v)", args[0], missing, err)
			}
		})
	}
}

// meta set --tag 9 writes only a value the boot can use as STATE's
// encryption config; anything else is refused and META is left as it was.
func TestMetaSetStateConfigValidated(t *testing.T) {
	for _, c := range []struct {
		name, value, wantErr string
	}{
		{name: "valid", value: `{"EncryptionProvider":"luks2","EncryptionKeys":[{"KeySlot":0,"KeyNodeID":{}}]}`},
		{name: "legacy shape", value: `{"provider":"luks2","keys":[{"slot":1,"static":{"passphrase":"x"}}]}`},
		{name: "YAML", value: "EncryptionProvider: luks2\n", wantErr: "not valid JSON"},
		{name: "trailing garbage", value: `{"EncryptionKeys":[{"KeySlot":0,"KeyNodeID":{}}]} }`, wantErr: "not valid JSON"},
		{name: "truncated", value: `{"EncryptionKeys":[{"KeySlot":0`, wantErr: "not valid JSON"},
		{name: "slot out of range", value: `{"EncryptionKeys":[{"KeySlot":40,"KeyNodeID":{}}]}`, wantErr: "slot 40"},
		{name: "wrong type", value: `{"EncryptionKeys":"nodeID"}`, wantErr: "META tag 9"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := luks2test.NewImage(t, 1<<20)
			before, _ := os.ReadFile(img)
			_, err := cryptctl(t, "meta", "set", "--init", "--tag", "9", "--value", c.value, img)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("valid tag 9 refused: %v", err)
				}
				if out, err := cryptctl(t, "meta", "get", "--tag", "9", img); err != nil || out != c.value {
					t.Fatalf("tag 9 = %q, %v", out, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "nothing was written") {
				t.Errorf("tag 9 %q: %v; want an error with %q", c.value, err, c.wantErr)
			}
			if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
				t.Error("a refused tag 9 changed the image")
			}
		})
	}
}

// cancel-wipe with a volume ID in the wrong case says what was meant.
func TestCancelWipeDidYouMean(t *testing.T) {
	img := luks2test.NewImage(t, 1<<20)
	_, err := cryptctl(t, "meta", "cancel-wipe", "--volume", "ephemeral", img)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "did you mean EPHEMERAL?") {
		t.Fatalf("cancel-wipe ephemeral: %v", err)
	}
}
