package keys

import "testing"

func TestNormalizeRecoveryKey(t *testing.T) {
	const key = "eingkdcd-hhrcendt-tiheghcb-urccgukv-cinjrvkd-nbeulnvi-vntikene-hbccenbc"
	for _, tc := range []struct {
		typed, want string
	}{
		{key, key},
		{"  " + key + " ", key},
		{"eingkdcdhhrcendttiheghcburccgukvcinjrvkdnbeulnvivntikenehbccenbc", key},
		{"EINGKDCD HHRCENDT TIHEGHCB URCCGUKV CINJRVKD NBEULNVI VNTIKENE HBCCENBC", key},
		{"eingkdcd-hhrcendt tiheghcb--urccgukv\tcinjrvkd-nbeulnvi-vntikene-hbccenbc", key},
		{key[:len(key)-1], ""},       // one character short
		{key + "c", ""},              // one too many
		{key[:len(key)-1] + "a", ""}, // 'a' is not modhex
		{"data-pass", ""},            // an ordinary passphrase
		{"", ""},
	} {
		got := NormalizeRecoveryKey([]byte(tc.typed))
		if string(got) != tc.want || (tc.want == "") != (got == nil) {
			t.Errorf("NormalizeRecoveryKey(%q) = %q, want %q", tc.typed, got, tc.want)
		}
	}
}
