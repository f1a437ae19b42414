package meta

import (
	"strings"
	"testing"
)

func TestSuggestVolumeID(t *testing.T) {
	for in, want := range map[string]string{
		"ephemeral": "EPHEMERAL", "Ephemeral": "EPHEMERAL", "state": "STATE", " State ": "STATE",
		"U-data": "u-data", "EPHEMERAL": "", "u-data": "", "bogus": "", "META": "", "u-": "",
		" u-data": "u-data", "U-data ": "u-data",
	} {
		if got := SuggestVolumeID(in); got != want {
			t.Errorf("SuggestVolumeID(%q) = %q, want %q", in, got, want)
		}
	}
	err := WipeRequest{Volume: "ephemeral", PartUUID: "x"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "did you mean EPHEMERAL?") {
		t.Errorf("Validate: %v", err)
	}
}
