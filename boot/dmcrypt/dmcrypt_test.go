package dmcrypt

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2"
	"golang.org/x/sys/unix"
)

func TestDMUUID(t *testing.T) {
	got := DMUUID("2f144136-b0de-4b51-b2eb-bd869cc39a6e", "luks2-STATE")
	if got != "CRYPT-LUKS2-2f144136b0de4b51b2ebbd869cc39a6e-luks2-STATE" {
		t.Errorf("got %q", got)
	}
}

func TestFromMapping(t *testing.T) {
	key := make([]byte, 64)
	for _, tc := range []struct {
		name    string
		m       luks2.Mapping
		opts    []string
		devSize int64
		want    Spec
		wantErr string
	}{
		{
			name: "dynamic segment runs to the end", devSize: 100 << 20,
			m:    luks2.Mapping{Cipher: "aes-xts-plain64", KeySize: 64, Offset: 16 << 20, Dynamic: true, SectorSize: 4096},
			want: Spec{Cipher: "aes-xts-plain64", Offset: 16 << 20, Size: 84 << 20, SectorSize: 4096},
		},
		{
			name: "fixed size, flags merged and deduplicated", devSize: 100 << 20,
			m:    luks2.Mapping{Cipher: "aes-xts-plain64", Offset: 1 << 20, Size: 10 << 20, SectorSize: 512, AllowDiscards: true, Flags: []string{"allow-discards", "no-read-workqueue"}},
			opts: []string{"no_write_workqueue", "no-read-workqueue"},
			want: Spec{Cipher: "aes-xts-plain64", Offset: 1 << 20, Size: 10 << 20, SectorSize: 512, Flags: []string{"allow_discards", "no_read_workqueue", "no_write_workqueue"}},
		},
		{
			name: "size rounded down to the sector", devSize: 16<<20 + 4096 + 512,
			m:    luks2.Mapping{Cipher: "aes-xts-plain64", Offset: 16 << 20, Dynamic: true, SectorSize: 4096},
			want: Spec{Cipher: "aes-xts-plain64", Offset: 16 << 20, Size: 4096, SectorSize: 4096},
		},
		{name: "device smaller than offset", devSize: 1 << 20, m: luks2.Mapping{Offset: 16 << 20, Dynamic: true}, wantErr: "smaller than the data offset"},
		{name: "unknown option", devSize: 100 << 20, m: luks2.Mapping{Offset: 1 << 20, Size: 4096}, opts: []string{"turbo"}, wantErr: `unknown dm-crypt option "turbo"`},
		{name: "key size mismatch", devSize: 100 << 20, m: luks2.Mapping{Offset: 1 << 20, Size: 4096, KeySize: 32}, wantErr: "volume key is 64 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromMapping("luks2-STATE", "/dev/vda2", tc.devSize, "u-u-i-d", tc.m, tc.opts, key)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Name, tc.want.UUID, tc.want.Backing, tc.want.Key = "luks2-STATE", "CRYPT-LUKS2-uuid-luks2-STATE", "/dev/vda2", key
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestMakeNode(t *testing.T) {
	root := t.TempDir()
	sys, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
	for n, name := range map[string]string{"dm-0": "luks2-STATE", "dm-1": "luks2-EPHEMERAL"} {
		d := filepath.Join(sys, "block", n, "dm")
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "name"), []byte(name+"\n"), 0o644)
		os.WriteFile(filepath.Join(sys, "block", n, "dev"), []byte("253:"+n[3:]+"\n"), 0o644)
	}
	var made []int
	nodes := Nodes{Sys: sys, Dev: dev, Mknod: func(path string, mode uint32, d int) error {
		made = append(made, d)
		return os.WriteFile(path, nil, 0o600)
	}}
	kname, ma, mi, err := nodes.Find("luks2-EPHEMERAL")
	if err != nil || kname != "dm-1" || ma != 253 || mi != 1 {
		t.Fatalf("Find = %s %d:%d %v", kname, ma, mi, err)
	}
	path, err := nodes.MakeNode("luks2-EPHEMERAL")
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dev, "mapper", "luks2-EPHEMERAL") || len(made) != 1 || made[0] != int(unix.Mkdev(253, 1)) {
		t.Errorf("path %s, mknod %v", path, made)
	}
	if _, err := nodes.MakeNode("luks2-u-data"); !errors.Is(err, ErrNoMapping) {
		t.Errorf("missing mapping: %v", err)
	}
}

func TestRemoveNode(t *testing.T) {
	dev := t.TempDir()
	nodes := Nodes{Dev: dev}
	p := filepath.Join(dev, "mapper", "luks2-STATE")
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, nil, 0o600)
	if err := nodes.RemoveNode("luks2-STATE"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node still there: %v", err)
	}
	if err := nodes.RemoveNode("luks2-STATE"); err != nil {
		t.Errorf("removing a node already gone: %v", err)
	}
}
