package modules

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestStageOf(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Stage
	}{
		{"kernel/drivers/virtio/virtio_pci.ko", StageDevices},
		{"kernel/drivers/block/virtio_blk.ko", StageDevices},
		{"kernel/drivers/char/hw_random/virtio-rng.ko", StageDevices},
		{"kernel/drivers/nvme/host/nvme.ko.xz", StageDevices},
		{"kernel/drivers/md/dm-crypt.ko", StageMapping},
		{"kernel/crypto/xts.ko", StageMapping},
		{"kernel/arch/x86/crypto/aesni-intel.ko", StageMapping},
		{"kernel/arch/x86/kvm/kvm.ko", StageDevices}, // arch/*/ but not crypto
		{"kernel/fs/xfs/xfs.ko", StageFilesystems},
		{"kernel/fs/mbcache.ko", StageFilesystems},
		{"kernel/lib/libcrc32c.ko", StageFilesystems},
		{"kernel/drivers/net/virtio_net.ko", StageNetwork},
		{"kernel/net/core/failover.ko", StageNetwork},
		{"kernel/fs", StageDevices}, // a directory name alone is no module in it
		{"updates/dkms/foo.ko", StageDevices},
	} {
		if got := StageOf(tc.path); got != tc.want {
			t.Errorf("StageOf(%q) = %s, want %s", tc.path, got, tc.want)
		}
	}
}

func TestLoaderStage(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko\nkernel/lib/libcrc32c.ko:\n" +
		"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio.ko:\n" +
		"kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko\nkernel/drivers/md/dm-mod.ko:\n" +
		"kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio.ko\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[Stage][]string{
		StageDevices:     {"virtio", "virtio_blk"},
		StageMapping:     {"dm_crypt", "dm_mod"},
		StageFilesystems: {"libcrc32c", "xfs"},
		StageNetwork:     {"virtio_net"},
	} {
		if got := l.Stage(s); !reflect.DeepEqual(got, want) {
			t.Errorf("Stage(%s) = %v, want %v", s, got, want)
		}
	}
}
