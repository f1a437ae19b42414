package boot

import (
	"fmt"

	"github.com/cryptinit/cryptinit/boot/console"
)

// PID 1 never exits: when it does, the kernel panics and the machine hangs
// with no banner and no reboot. A panic is caught where it happens and
// becomes a *Fatal, whose banner Main prints before it reboots (or runs the
// debug shell). Main's own recover cannot catch a panic in another
// goroutine: every goroutine of the boot runs its work through guard.

// crashHint is the banner's advice for a crash.
const crashHint = "this is a bug in cryptinit; please report the console log"

// crashed is the *Fatal for a recovered panic value r during what, on
// volume ("" for none).
func crashed(volume, what string, r any) *Fatal {
	return &Fatal{Failure: console.Failure{Volume: volume, Reason: fmt.Errorf("cryptinit crashed while %s: %v", what, r), Hint: crashHint}}
}

// guard runs fn and turns a panic in it into a *Fatal for volume.
func guard(volume, what string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = crashed(volume, what, r)
		}
	}()
	return fn()
}

// recoverFatal, deferred, turns a panic of the calling function into a
// *Fatal in *err.
func recoverFatal(err *error) {
	if r := recover(); r != nil {
		*err = crashed("", "booting", r)
	}
}
