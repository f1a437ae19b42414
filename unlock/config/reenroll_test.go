package config

import (
	"strings"
	"testing"
)

func TestReenrollOnPCRChange(t *testing.T) {
	head := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n"
	cfg, err := Parse([]byte(head +
		"    - {slot: 0, tpm: {options: {pcrs: [7]}, reenrollOnPCRChange: true}}\n" +
		"    - {slot: 1, tpm: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ks := cfg.Volume("EPHEMERAL").Encryption.Keys
	if !ks[0].TPM.ReenrollOnPCRChange || ks[1].TPM.ReenrollOnPCRChange {
		t.Errorf("reenrollOnPCRChange: slot 0 %v (want true), slot 1 %v (want the default, false)",
			ks[0].TPM.ReenrollOnPCRChange, ks[1].TPM.ReenrollOnPCRChange)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings %v", cfg.Warnings)
	}

	// on other kinds, or beside the kind, it is refused and the error says where it belongs
	for name, key := range map[string]string{
		"kms":       "{slot: 0, kms: {endpoint: grpc://kms:1, reenrollOnPCRChange: true}}",
		"static":    "{slot: 0, static: {passphrase: x, reenrollOnPCRChange: true}}",
		"nodeID":    "{slot: 0, nodeID: {reenrollOnPCRChange: true}}",
		"key level": "{slot: 0, tpm: {}, reenrollOnPCRChange: true}",
	} {
		_, err := Parse([]byte(head + "    - " + key + "\n"))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, w := range []string{"line 5", "reenrollOnPCRChange", "only tpm keys take it"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", name, err, w)
			}
		}
	}

	// PCR 15 is bound anyway, and the latch is told from PCR 7
	cfg, err = Parse([]byte(head + "    - {slot: 0, tpm: {options: {pcrs: [7, 15]}, reenrollOnPCRChange: true}}\n"))
	if err != nil || len(cfg.Warnings) != 0 {
		t.Errorf("pcrs [7, 15]: %v %v", err, cfg.Warnings)
	}
	// bound to more than PCR 7: only a change of PCR 7 alone re-enrolls
	cfg, err = Parse([]byte(head + "    - {slot: 0, tpm: {options: {pcrs: [0, 7]}, reenrollOnPCRChange: true}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].String(), "PCR 7 alone") ||
		!strings.Contains(cfg.Warnings[0].String(), "keys[0].tpm.reenrollOnPCRChange") {
		t.Errorf("warnings %v", cfg.Warnings)
	}
}
