package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeModules writes a module tree with depmod's tables for two modules.
func fakeModules(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"modules.dep":                   "kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko\nkernel/drivers/md/dm-mod.ko:\n",
		"modules.alias":                 "alias devname:mapper/control dm_mod\n",
		"kernel/drivers/md/dm-crypt.ko": "dm-crypt",
		"kernel/drivers/md/dm-mod.ko":   "dm-mod",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestImageBuild(t *testing.T) {
	mods := fakeModules(t)
	dir := t.TempDir()
	init := filepath.Join(dir, "cryptinit")
	if err := os.WriteFile(init, []byte("init"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := []string{"image", "build", "--kernel-version", "6.1.0-test", "--modules-dir", mods, "--init", init, "--compress", "none"}
	tests := []struct {
		name    string
		args    []string
		wantErr string
		wantOut string
	}{
		{"named module and its dependency", []string{"--modules", "dm-crypt", "-o", filepath.Join(dir, "a.img")}, "",
			"crypto       2 modules: dm_crypt dm_mod"},
		{"a module the kernel lacks", []string{"--modules", "nvme", "-o", filepath.Join(dir, "b.img")}, "modules [nvme]", ""},
		{"no output", []string{"--modules", "dm-crypt"}, "-o FILE is required", ""},
		{"PCR key without --uki", []string{"--pcr-key", "k.pem", "-o", filepath.Join(dir, "c.img")}, "add --uki", ""},
	}
	for _, tt := range tests {
		out, err := cryptctl(t, append(append([]string{}, base...), tt.args...)...)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: err = %v, want %q\n%s", tt.name, err, tt.wantErr, out)
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v\n%s", tt.name, err, out)
		case !strings.Contains(out, tt.wantOut):
			t.Errorf("%s: output lacks %q:\n%s", tt.name, tt.wantOut, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "b.img")); err == nil {
		t.Errorf("a failed build left an image behind")
	}
}
