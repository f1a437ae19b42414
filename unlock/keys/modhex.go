package keys

import "bytes"

// modhex is the alphabet of systemd's recovery keys (Yubico's modhex: hex
// digits 0-f written as keys that sit at the same place on most layouts).
const modhex = "cbdefghijklnrtuv"

// recoveryKeyChars is the number of modhex characters in a systemd
// recovery key: 32 bytes, shown in 8 groups of 8 joined by dashes.
const recoveryKeyChars = 64

// NormalizeRecoveryKey returns typed as systemd-cryptenroll --recovery-key
// printed it — lower case, groups of 8 joined by dashes — when typed is such
// a key written with spaces or dashes anywhere (or none) and in any case;
// nil when typed is not a recovery key. The key's slot holds the printed
// form as its passphrase, so this lets a typed key open it as typed. The
// caller zeroes the result.
func NormalizeRecoveryKey(typed []byte) []byte {
	out := make([]byte, 0, recoveryKeyChars+recoveryKeyChars/8-1)
	n := 0
	for _, c := range typed {
		switch {
		case c == ' ' || c == '\t' || c == '-':
			continue
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		}
		if bytes.IndexByte([]byte(modhex), c) < 0 || n == recoveryKeyChars {
			clear(out)
			return nil
		}
		if n > 0 && n%8 == 0 {
			out = append(out, '-')
		}
		out = append(out, c)
		n++
	}
	if n != recoveryKeyChars {
		clear(out)
		return nil
	}
	return out
}
