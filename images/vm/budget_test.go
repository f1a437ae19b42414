package vm

import (
	"os"
	"testing"
)

// InitramfsBudget is the most the compressed initramfs (init, modules, mkfs
// and their libraries; no kernel) may weigh.
const InitramfsBudget = 6_000_000

// TestVMInitramfsBudget keeps the image within its size budget: a new
// dependency that bloats the init shows up here, not on a node's ESP.
func TestVMInitramfsBudget(t *testing.T) {
	a := RequireInit(t)
	img, err := os.Stat(a.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	init, err := os.Stat(a.InitBinary)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("init %.2f MB stripped; initramfs %.2f MB compressed (budget %.2f MB)",
		float64(init.Size())/1e6, float64(img.Size())/1e6, float64(InitramfsBudget)/1e6)
	if img.Size() > InitramfsBudget {
		t.Errorf("compressed initramfs is %d bytes, over the %d byte budget", img.Size(), InitramfsBudget)
	}
}
