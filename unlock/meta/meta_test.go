package meta

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/config"
)

// image is an in-memory META partition.
type image []byte

func (b image) ReadAt(p []byte, off int64) (int, error)  { return copy(p, b[off:]), nil }
func (b image) WriteAt(p []byte, off int64) (int, error) { return copy(b[off:], p), nil }

func written(t *testing.T, m *Meta) image {
	t.Helper()
	img := make(image, Size)
	if err := m.Write(img); err != nil {
		t.Fatal(err)
	}
	return img
}

func TestRoundTrip(t *testing.T) {
	m := New()
	m.Set(TagUUIDOverride, []byte("1f9d1f38-8d4e-4b2b-9d3c-0e1c7e0c2f11"))
	m.Set(TagStateEncryptionConfig, []byte(`{"EncryptionProvider":"luks2"}`))
	m.Set(200, nil)
	img := written(t, m)
	if !bytes.Equal(img[:CopySize], img[CopySize:2*CopySize]) {
		t.Fatal("the two copies differ")
	}
	// layout facts from compat-formats.md
	if binary.BigEndian.Uint32(img) != 0x5A4B3C2D || binary.BigEndian.Uint32(img[CopySize-4:]) != 0xA5B4C3D2 {
		t.Fatal("magics not where the format puts them")
	}
	blk := bytes.Clone(img[:CopySize])
	sum := bytes.Clone(blk[CopySize-36 : CopySize-4])
	copy(blk[CopySize-36:CopySize-4], make([]byte, 32))
	if want := sha256.Sum256(blk); !bytes.Equal(sum, want[:]) {
		t.Fatal("checksum is not SHA-256 of the block with the field zeroed")
	}
	if tag := binary.BigEndian.Uint32(img[4:]); tag != TagStateEncryptionConfig {
		t.Errorf("first record tag %d", tag)
	}
	got, err := Read(img)
	if err != nil {
		t.Fatal(err)
	}
	if got.Copy != 1 || len(got.Tags()) != 3 {
		t.Fatalf("copy %d tags %v", got.Copy, got.Tags())
	}
	if v, _ := got.Get(TagUUIDOverride); string(v) != "1f9d1f38-8d4e-4b2b-9d3c-0e1c7e0c2f11" {
		t.Errorf("tag 15 = %q", v)
	}
	if v, ok := got.Get(200); !ok || len(v) != 0 {
		t.Errorf("empty tag lost")
	}
	if !got.Delete(200) || got.Delete(200) {
		t.Error("Delete reports wrongly")
	}
}

func TestFallbackAndCorruption(t *testing.T) {
	m := New()
	m.Set(TagUUIDOverride, []byte("x"))
	tests := []struct {
		name     string
		damage   func(img image)
		wantCopy int
		wantErr  error
	}{
		{"intact", func(image) {}, 1, nil},
		{"copy 1 data flipped", func(img image) { img[10] ^= 1 }, 2, nil},
		{"copy 1 magic", func(img image) { img[0] = 0 }, 2, nil},
		{"copy 1 zeroed", func(img image) { copy(img[:CopySize], make([]byte, CopySize)) }, 2, nil},
		{"copy 1 end magic", func(img image) { img[CopySize-1] ^= 0xff }, 2, nil},
		{"both flipped", func(img image) { img[10] ^= 1; img[CopySize+10] ^= 1 }, 0, ErrCorrupt},
		{"blank", func(img image) { copy(img, make([]byte, Size)) }, 0, ErrBlank},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := written(t, m)
			tt.damage(img)
			got, err := Read(img)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
				if tt.wantErr == ErrCorrupt && !strings.Contains(err.Error(), "checksum mismatch") {
					t.Errorf("error does not say why: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Copy != tt.wantCopy {
				t.Errorf("read copy %d, want %d", got.Copy, tt.wantCopy)
			}
			if tt.wantCopy == 2 && got.FirstCopyErr == nil {
				t.Error("no reason given for skipping copy 1")
			}
		})
	}
}

func TestUnmarshalRejects(t *testing.T) {
	m := New()
	m.Set(7, []byte("abc"))
	good, _ := m.Marshal()
	reseal := func(b []byte) []byte {
		sum := checksum(b)
		copy(b[CopySize-36:], sum[:])
		return b
	}
	long := bytes.Clone(good)
	binary.BigEndian.PutUint32(long[8:], CopySize) // length past the data area
	dup := bytes.Clone(good)
	copy(dup[15:], dup[4:15]) // the same record again
	for name, b := range map[string][]byte{"long": reseal(long), "dup": reseal(dup), "short": good[:100]} {
		if _, err := Unmarshal(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFull(t *testing.T) {
	m := New()
	m.Set(1, make([]byte, CopySize))
	if _, err := m.Marshal(); !errors.Is(err, ErrFull) {
		t.Fatalf("err %v", err)
	}
	m = New()
	m.Set(1, make([]byte, dataEnd-headerSize-2*recordHeader)) // exactly fits
	if _, err := m.Marshal(); err != nil {
		t.Fatal(err)
	}
}

func TestStateConfigShapes(t *testing.T) {
	tests := []struct {
		name string
		json string
		want config.Key
	}{
		{"talos current (Go names, nil pointers)",
			`{"EncryptionProvider":"luks2","EncryptionKeys":[{"KeyStatic":null,"KeyNodeID":{},"KeyKMS":null,"KeySlot":2,"KeyTPM":null,"KeyLockToSTATE":null}],"EncryptionCipher":"","EncryptionKeySize":0,"EncryptionBlockSize":0,"EncryptionPerfOptions":null}`,
			config.Key{Slot: 2, NodeID: &config.NodeIDKey{}}},
		{"talos tpm with options",
			`{"EncryptionProvider":"luks2","EncryptionKeys":[{"KeySlot":0,"KeyTPM":{"TPMOptions":{"PCRs":[0,7]},"TPMCheckSecurebootStatusOnEnroll":true}}]}`,
			config.Key{TPM: &config.TPMKey{CheckSecurebootStatusOnEnroll: true, Options: &config.TPMOptions{PCRs: []int{0, 7}}}}},
		{"legacy tpm without options", `{"EncryptionKeys":[{"KeySlot":1,"KeyTPM":{}}]}`, config.Key{Slot: 1, TPM: &config.TPMKey{}}},
		{"lower-cased Go names", `{"encryptionprovider":"luks2","encryptionkeys":[{"keyslot":3,"keykms":{"kmsendpoint":"grpc://k:1"}}]}`,
			config.Key{Slot: 3, KMS: &config.KMSKey{Endpoint: "grpc://k:1"}}},
		{"legacy YAML names", `{"provider":"luks2","keys":[{"slot":4,"static":{"passphrase":"pw"}}]}`,
			config.Key{Slot: 4, Static: &config.StaticKey{Passphrase: "pw"}}},
		{"static KeyData", `{"EncryptionKeys":[{"KeySlot":0,"KeyStatic":{"KeyData":"pw"}}]}`,
			config.Key{Static: &config.StaticKey{Passphrase: "pw"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := DecodeStateConfig([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if len(e.Keys) != 1 {
				t.Fatalf("keys %+v", e.Keys)
			}
			got := e.Keys[0]
			if got.Slot != tt.want.Slot || got.Kind() != tt.want.Kind() {
				t.Fatalf("got %v want %v", got.String(), tt.want.String())
			}
			switch {
			case got.Static != nil && got.Static.Passphrase != tt.want.Static.Passphrase,
				got.KMS != nil && got.KMS.Endpoint != tt.want.KMS.Endpoint,
				got.TPM != nil && (got.TPM.CheckSecurebootStatusOnEnroll != tt.want.TPM.CheckSecurebootStatusOnEnroll ||
					len(got.TPM.PCRs()) != len(tt.want.TPM.PCRs())):
				t.Errorf("got %+v", got)
			}
		})
	}
	for _, bad := range []string{`{"EncryptionKeys":[]}`, `{"EncryptionKeys":[{"KeySlot":0,"KeyNodeID":{},"KeyLockToSTATE":true}]}`, `[`} {
		if _, err := DecodeStateConfig([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestStateConfigRoundTrip(t *testing.T) {
	cfg, err := config.ParseFile("../../configs/tpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Volume("STATE").Encryption
	data, err := EncodeStateConfig(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"EncryptionProvider":"luks2"`, `"KeyTPM":{"TPMOptions":{"PCRs":[7]},"TPMCheckSecurebootStatusOnEnroll":true}`, `"KeyNodeID":{}`, `"KeySlot":1`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("tag 9 %s lacks %s", data, want)
		}
	}
	back, err := DecodeStateConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := EncodeStateConfig(back)
	if !bytes.Equal(data, again) {
		t.Errorf("round trip changed tag 9:\n%s\n%s", data, again)
	}
}

func TestMachineConfigWins(t *testing.T) {
	metaOnly := `{"EncryptionProvider":"luks2","EncryptionKeys":[{"KeySlot":0,"KeyStatic":{"KeyData":"from-meta"}}]}`
	cfg, err := config.Parse([]byte("kind: VolumeConfig\nname: STATE\nencryption:\n  keys: [{slot: 5, nodeID: {}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Volumes[0].Trust = config.Trust{Source: "the signed image", Authenticated: true}
	img := make(image, Size)
	m := New()
	m.Set(TagStateEncryptionConfig, []byte(metaOnly))
	if err := m.Write(img); err != nil {
		t.Fatal(err)
	}

	// META alone
	vol, src, err := ReadStateConfig(&config.Config{}, img)
	if err != nil || src != SourceMETA || vol.Encryption.Keys[0].Static.Passphrase != "from-meta" {
		t.Fatalf("META alone: %v %v %+v", err, src, vol)
	}
	// machine config wins and META is rewritten to match
	vol, src, err = ReadStateConfig(cfg, img)
	if err != nil || src != SourceMachineConfig || vol.Encryption.Keys[0].Slot != 5 {
		t.Fatalf("with machine config: %v %v %+v", err, src, vol)
	}
	// a later boot without the machine config now gets the same config from META
	vol, src, err = ReadStateConfig(nil, img)
	if err != nil || src != SourceMETA || vol.Encryption.Keys[0].Slot != 5 || vol.Encryption.Keys[0].Kind() != config.KindNodeID {
		t.Fatalf("after rewrite: %v %v %+v", err, src, vol)
	}
	// blank META: machine config still works and initialises META
	blank := make(image, Size)
	if _, src, err := ReadStateConfig(cfg, blank); err != nil || src != SourceMachineConfig {
		t.Fatal(err, src)
	}
	if _, err := Read(blank); err != nil {
		t.Fatalf("META not initialised: %v", err)
	}
	// nothing anywhere
	if vol, _, err := ReadStateConfig(nil, make(image, Size)); vol != nil || err != nil {
		t.Fatalf("blank: %v %v", vol, err)
	}
}

// TestUnauthenticatedConfigLeavesTag9: a machine config that is not
// authenticated (read from an ESP) opens STATE with its own keys but
// neither rewrites tag 9 nor initialises a blank META.
func TestUnauthenticatedConfigLeavesTag9(t *testing.T) {
	talos := `{"EncryptionProvider":"luks2","EncryptionKeys":[{"KeySlot":0,"KeyNodeID":{}}]}`
	cfg, err := config.Parse([]byte("kind: VolumeConfig\nname: STATE\nencryption:\n  keys: [{slot: 5, static: {passphrase: planted}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Volumes[0].Trust = config.Trust{Source: "cryptinit.config=PARTLABEL=ESP:/c.yaml"}
	img := make(image, Size)
	m := New()
	m.Set(TagStateEncryptionConfig, []byte(talos))
	if err := m.Write(img); err != nil {
		t.Fatal(err)
	}
	before := append(image(nil), img...)
	vol, src, err := ReadStateConfig(cfg, img)
	if err != nil || src != SourceMachineConfig || vol.Encryption.Keys[0].Slot != 5 || vol.Trust.Authenticated {
		t.Fatalf("ESP config: %v %v %+v", err, src, vol)
	}
	if !bytes.Equal(img, before) {
		m, _ := Read(img)
		v, _ := m.Get(TagStateEncryptionConfig)
		t.Fatalf("META was written; tag 9 is now %s", v)
	}
	blank := make(image, Size)
	if _, src, err := ReadStateConfig(cfg, blank); err != nil || src != SourceMachineConfig {
		t.Fatal(err, src)
	}
	if _, err := Read(blank); !errors.Is(err, ErrBlank) {
		t.Fatalf("a blank META was initialised: %v", err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	m := New()
	m.Set(9, []byte(`{"EncryptionKeys":[{"KeySlot":0,"KeyNodeID":{}}]}`))
	buf, _ := m.Marshal()
	f.Add(buf[:512])
	f.Fuzz(func(t *testing.T, head []byte) {
		// the fuzzer writes the start of a copy; the trailer is made valid so
		// that the record parser is reached
		buf := make([]byte, CopySize)
		copy(buf, head)
		binary.BigEndian.PutUint32(buf, magic1)
		binary.BigEndian.PutUint32(buf[CopySize-4:], magic2)
		sum := checksum(buf)
		copy(buf[CopySize-36:], sum[:])
		m, err := Unmarshal(buf)
		if err != nil {
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		m2, err := Unmarshal(out)
		if err != nil || len(m2.Tags()) != len(m.Tags()) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzDecodeStateConfig(f *testing.F) {
	f.Add([]byte(`{"EncryptionProvider":"luks2","EncryptionKeys":[{"KeySlot":0,"KeyNodeID":{}}]}`))
	f.Add([]byte(`{"provider":"luks2","keys":[{"slot":4,"static":{"passphrase":"pw"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeStateConfig(data)
		if err != nil {
			return
		}
		if len(e.Keys) == 0 {
			t.Fatal("accepted a config without keys")
		}
		for _, k := range e.Keys {
			if k.LockToSTATE || k.Kind() == "" {
				t.Fatalf("accepted bad key %+v", k)
			}
		}
	})
}
