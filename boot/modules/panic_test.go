package modules

import (
	"strings"
	"testing"
)

type panicProber struct{}

func (panicProber) Probe(name, _ string) error { panic("prober bug") }

// TestLoadAllPanic: a panic while loading a module on one of LoadAll's
// goroutines is that module's error, not the end of PID 1.
func TestLoadAllPanic(t *testing.T) {
	l, err := Open(writeTables(t), panicProber{})
	if err != nil {
		t.Fatal(err)
	}
	res := l.LoadAll([]string{"dm_mod"})
	if len(res) != 1 || res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "loading dm_mod crashed: prober bug") {
		t.Fatalf("got %+v", res)
	}
}
