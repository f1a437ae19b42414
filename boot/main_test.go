package boot

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/boot/console"
)

func TestParseInitExec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"6,812,7874012,-;Run /init as init process\n", 7874012 * time.Microsecond, true},
		{"6,812,7874012,-,caller=T1;Run /sbin/init as init process\n", 7874012 * time.Microsecond, true},
		{"6,811,7000000,-;Freeing unused kernel image memory: 2000K\n", 0, false},
		{"6,812,x,-;Run /init as init process\n", 0, false},
		{"garbage", 0, false},
	} {
		got, ok := parseInitExec(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseInitExec(%q) = %v %v", tc.in, got, ok)
		}
	}
}

func TestEngineLogToConsole(t *testing.T) {
	var buf bytes.Buffer
	l := console.NewLogger(time.Now(), &buf, nil)
	log := engineLog(l)
	log.Info("opened", "volume", "STATE")
	log.Warn("sync problem", "volume", "EPHEMERAL", "slot", 2)
	out := buf.String()
	if strings.Contains(out, "opened") {
		t.Errorf("info lines should stay out of the console: %q", out)
	}
	if !strings.Contains(out, "unlock: level=WARN msg=\"sync problem\" volume=EPHEMERAL slot=2\n") || strings.Contains(out, "time=") {
		t.Errorf("got %q", out)
	}
}
