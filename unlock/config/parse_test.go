package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSeedExamplesParse(t *testing.T) {
	files, err := filepath.Glob("testdata/seed-*.yaml")
	if err != nil || len(files) != 5 {
		t.Fatalf("want the 5 seed examples in testdata, got %v (%v)", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := ParseFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Volumes) == 0 {
				t.Fatal("no volumes parsed")
			}
			for _, v := range cfg.Volumes {
				if !v.Encrypted() || len(v.Encryption.Keys) == 0 {
					t.Errorf("%s: no encryption keys parsed", v.ID)
				}
			}
		})
	}
}

func TestSeedExampleContents(t *testing.T) {
	cfg, err := ParseFile("testdata/seed-3-key-kinds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	state, eph := cfg.Volume("STATE"), cfg.Volume("EPHEMERAL")
	if state == nil || eph == nil {
		t.Fatalf("volumes: %+v", cfg.Volumes)
	}
	if k := state.Encryption.Keys[0]; k.Slot != 1 || k.Kind() != KindNodeID || k.LockToSTATE {
		t.Errorf("STATE key: %+v", k)
	}
	k := eph.Encryption.Keys[0]
	if k.Slot != 0 || k.Kind() != KindStatic || k.Static.Passphrase != "supersecret" || !k.LockToSTATE {
		t.Errorf("EPHEMERAL key: %+v", k)
	}
	cfg, err = ParseFile("testdata/seed-2-user-volume.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Volumes[0].ID != "u-my-user-volume" || cfg.Volumes[0].Kind != KindUserVolumeConfig {
		t.Errorf("user volume: %+v", cfg.Volumes[0])
	}
}

func TestExampleConfigs(t *testing.T) {
	files, _ := filepath.Glob("../../configs/*.yaml")
	if len(files) < 2 {
		t.Fatalf("want example configs in configs/, got %v", files)
	}
	for _, f := range files {
		cfg, err := ParseFile(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, v := range cfg.Volumes {
			if e := v.Encryption; e == nil || e.KDF == nil || e.KDF.MemoryKiB == 0 || e.KDF.MemoryKiB > 32*1024 {
				t.Errorf("%s %s: example configs must carry small test KDF costs", f, v.ID)
			}
		}
	}
}

func TestFullSchema(t *testing.T) {
	const doc = `
apiVersion: v1alpha1
kind: VolumeConfig
name: EPHEMERAL
encryption:
  provider: luks2
  cipher: aes-xts-plain64
  keySize: 512
  blockSize: 4096
  options: [no_read_workqueue, no_write_workqueue]
  allowDiscards: true
  kdf: {type: argon2id, memoryKiB: 8192, iterations: 3, parallelism: 2}
  keys:
    - kms: {endpoint: "https://kms:4050"}
      slot: 2
      lockToSTATE: true
    - tpm:
        checkSecurebootStatusOnEnroll: true
        options: {pcrs: [0, 7]}
      slot: 3
    - static: {passphrase: pw}
      slot: 31
      recovery: true
filesystem: {type: ext4}
mountPoint: /var
`
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	v := cfg.Volumes[0]
	e := v.Encryption
	if e.Cipher != "aes-xts-plain64" || e.KeySize != 512 || e.BlockSize != 4096 || !e.AllowDiscards ||
		len(e.Options) != 2 || e.KDF.MemoryKiB != 8192 || e.KDF.Iterations != 3 || e.KDF.Parallelism != 2 {
		t.Errorf("encryption: %+v kdf %+v", e, e.KDF)
	}
	if v.Filesystem != "ext4" || v.MountPoint != "/var" {
		t.Errorf("fs %q mount %q", v.Filesystem, v.MountPoint)
	}
	if k := e.Keys[0]; k.KMS.Endpoint != "https://kms:4050" || !k.LockToSTATE {
		t.Errorf("kms key %+v", k)
	}
	if k := e.Keys[1]; !k.TPM.CheckSecurebootStatusOnEnroll || len(k.TPM.PCRs()) != 2 {
		t.Errorf("tpm key %+v", k.TPM)
	}
	if k := e.Keys[2]; !k.Recovery || k.String() != "slot 31 (static, recovery)" {
		t.Errorf("recovery key %v", k.String())
	}
	if (&TPMKey{}).PCRs()[0] != 7 {
		t.Error("default PCRs are not [7]")
	}
}

func TestSkipsOtherDocuments(t *testing.T) {
	const doc = `version: v1alpha1
machine: {type: worker, install: {disk: /dev/sda}}
---
apiVersion: v1alpha1
kind: HostnameConfig
hostname: n1
anything: goes
---
apiVersion: v1alpha1
kind: VolumeConfig
name: IMAGECACHE
provisioning: {maxSize: 1GiB}
---
apiVersion: v1alpha1
kind: VolumeConfig
name: EPHEMERAL
`
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Volumes) != 1 || cfg.Volumes[0].ID != "EPHEMERAL" || cfg.Volumes[0].Encrypted() {
		t.Errorf("volumes %+v", cfg.Volumes)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].String(), "IMAGECACHE") {
		t.Errorf("warnings %v", cfg.Warnings)
	}
}

func TestErrors(t *testing.T) {
	head := "apiVersion: v1alpha1\nkind: VolumeConfig\nname: EPHEMERAL\n"
	tests := []struct {
		name, doc string
		want      []string // substrings of the error
	}{
		{"unknown field", head + "encryption:\n  keys:\n    - nodeId: {}\n      slot: 0\n",
			[]string{"line 6", `"encryption.keys[0].nodeId"`, `did you mean "nodeID"`}},
		{"unknown top field", head + "encrypton: {}\n", []string{"line 4", `"encrypton"`}},
		{"duplicate slot", head + "encryption:\n  keys:\n    - nodeID: {}\n      slot: 1\n    - static: {passphrase: x}\n      slot: 1\n",
			[]string{"document 1 (EPHEMERAL)", "line 9", "encryption.keys[1].slot", "slot 1 is already used by keys[0]", "own slot"}},
		{"slot range", head + "encryption:\n  keys:\n    - nodeID: {}\n      slot: 32\n", []string{"slot 32 is outside 0..31"}},
		{"negative slot", head + "encryption:\n  keys:\n    - nodeID: {}\n      slot: -1\n", []string{"slot -1 is outside"}},
		{"missing slot", head + "encryption:\n  keys:\n    - nodeID: {}\n", []string{"has no slot"}},
		{"no keys", head + "encryption:\n  provider: luks2\n", []string{"encryption.keys", "no keys", "add at least one key"}},
		{"two kinds", head + "encryption:\n  keys:\n    - nodeID: {}\n      static: {passphrase: x}\n      slot: 0\n",
			[]string{"2 kinds (static, nodeID)", "split it"}},
		{"no kind", head + "encryption:\n  keys:\n    - slot: 0\n", []string{"no kind"}},
		{"lockToSTATE on STATE", "kind: VolumeConfig\nname: STATE\nencryption:\n  keys:\n    - nodeID: {}\n      slot: 0\n      lockToSTATE: true\n",
			[]string{"(STATE)", "lockToSTATE", "cannot be locked to itself"}},
		{"bad provider", head + "encryption:\n  provider: luks1\n  keys: [{slot: 0, nodeID: {}}]\n", []string{"provider \"luks1\""}},
		{"bad kms", head + "encryption:\n  keys: [{slot: 0, kms: {}}]\n", []string{"kms.endpoint"}},
		{"bad pcr", head + "encryption:\n  keys: [{slot: 0, tpm: {options: {pcrs: [24]}}}]\n", []string{"PCR 24"}},
		{"bad option", head + "encryption:\n  options: [fast]\n  keys: [{slot: 0, nodeID: {}}]\n", []string{"dm-crypt option \"fast\""}},
		{"bad fs", head + "filesystem: {type: zfs}\n", []string{"filesystem \"zfs\""}},
		{"type error", head + "encryption:\n  keys: [{slot: zero, nodeID: {}}]\n", []string{"line 5", "cannot unmarshal"}},
		{"duplicate volume", head + "---\n" + head, []string{"already configured by document 1"}},
		{"user volume without name", "kind: UserVolumeConfig\nencryption:\n  keys: [{slot: 0, nodeID: {}}]\n", []string{"needs a name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestStaticOnStateWarns(t *testing.T) {
	cfg, err := Parse([]byte("kind: VolumeConfig\nname: STATE\nencryption:\n  keys: [{slot: 0, static: {passphrase: x}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].String(), "clear text in META") {
		t.Errorf("warnings %v", cfg.Warnings)
	}
}

func TestValidationErrorType(t *testing.T) {
	cfg, err := Parse([]byte("kind: VolumeConfig\nname: EPHEMERAL\nencryption: {provider: luks2}\n"))
	var verr *Error
	if !errors.As(err, &verr) || len(verr.Problems) != 1 || cfg == nil {
		t.Fatalf("err %v cfg %v", err, cfg)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/seed-*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("kind: VolumeConfig\nname: STATE\nencryption: {keys: [{slot: 99, tpm: {options: {pcrs: [1]}}}]}\n"))
	f.Add([]byte("machine:\n  systemDiskEncryption:\n    state: {keys: [{slot: 0, nodeID: {}}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		for _, v := range cfg.Volumes {
			if v.Encryption == nil {
				continue
			}
			if len(v.Encryption.Keys) == 0 {
				t.Fatalf("valid config with no keys: %q", data)
			}
			for _, k := range v.Encryption.Keys {
				if k.Slot < 0 || k.Slot > MaxSlot || k.Kind() == "" {
					t.Fatalf("valid config with bad key %+v: %q", k, data)
				}
			}
		}
	})
}

// TestReferenceExample parses the annotated example of configs/README.md, so
// the reference cannot drift from the parser.
func TestReferenceExample(t *testing.T) {
	doc, err := os.ReadFile("../../configs/README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in configs/README.md")
	}
	cfg, err := Parse([]byte(block))
	if err != nil {
		t.Fatal(err)
	}
	v := cfg.Volume("EPHEMERAL")
	if v == nil || len(v.Encryption.Keys) != 5 || v.MountPoint == "" || v.Encryption.KDF == nil || !v.Encryption.Keys[4].Recovery {
		t.Fatalf("reference example parsed as %+v", v)
	}
}

func TestSystemDiskEncryption(t *testing.T) {
	const doc = `version: v1alpha1
machine:
  type: controlplane
  install: {disk: /dev/sda}
  systemDiskEncryption:
    state:
      provider: luks2
      keys:
        - nodeID: {}
          slot: 0
    ephemeral:
      provider: luks2
      cipher: aes-xts-plain64
      options: [no_read_workqueue]
      keys:
        - kms: {endpoint: "https://kms:4050"}
          slot: 1
        - tpm: {checkSecurebootStatusOnEnroll: true}
          slot: 2
cluster:
  anything: [1, 2]
`
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	st, eph := cfg.Volume("STATE"), cfg.Volume("EPHEMERAL")
	if st == nil || eph == nil || st.Kind != KindSystemDiskEncryption || st.Encryption.Keys[0].Kind() != KindNodeID ||
		len(eph.Encryption.Keys) != 2 || eph.Encryption.Keys[0].KMS.Endpoint != "https://kms:4050" || !eph.Encryption.Keys[1].TPM.CheckSecurebootStatusOnEnroll {
		t.Fatalf("volumes %+v", cfg.Volumes)
	}
	bad := strings.Replace(doc, "          slot: 2\n", "          slot: 1\n", 1)
	if _, err := Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), "machine.systemDiskEncryption.ephemeral.keys[1].slot") {
		t.Fatalf("duplicate slot: %v", err)
	}
	typo := strings.Replace(doc, "nodeID: {}", "nodeid: {}", 1)
	if _, err := Parse([]byte(typo)); err == nil || !strings.Contains(err.Error(), `"machine.systemDiskEncryption.state.keys[0].nodeid"`) {
		t.Fatalf("typo: %v", err)
	}
	both := doc + "---\nkind: VolumeConfig\nname: STATE\nencryption:\n  keys: [{slot: 0, nodeID: {}}]\n"
	if _, err := Parse([]byte(both)); err == nil || !strings.Contains(err.Error(), "already configured by document 1") {
		t.Fatalf("configured twice: %v", err)
	}
}
