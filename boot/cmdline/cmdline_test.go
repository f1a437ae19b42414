package cmdline

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFields(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a  b\n", []string{"a", "b"}},
		{`console="ttyS0,115200" x=1`, []string{"console=ttyS0,115200", "x=1"}},
		{`foo="a b" bar`, []string{"foo=a b", "bar"}},
		{`"quoted whole"`, []string{"quoted whole"}},
	} {
		if got := Fields(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Fields(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		check func(t *testing.T, c Cmdline)
	}{
		{"defaults", "quiet", func(t *testing.T, c Cmdline) {
			if c.Wait != DefaultWait || c.RebootDelay != DefaultRebootDelay || c.Init != DefaultInit ||
				c.PromptTimeout != DefaultPromptTimeout || c.DebugShell || c.Config != "" || c.Root != "" {
				t.Errorf("defaults wrong: %+v", c)
			}
		}},
		{"all ours", "cryptinit.config=PARTLABEL=ESP:/cryptinit/config.yaml cryptinit.debug=shell cryptinit.wait=5 cryptinit.reboot-delay=1m cryptinit.prompt-timeout=0 cryptinit.modules=vfat,,nls_cp437", func(t *testing.T, c Cmdline) {
			if c.Config != "PARTLABEL=ESP:/cryptinit/config.yaml" {
				t.Errorf("Config = %q", c.Config)
			}
			if !c.DebugShell || c.Wait != 5*time.Second || c.RebootDelay != time.Minute || c.PromptTimeout != 0 {
				t.Errorf("got %+v", c)
			}
			if !reflect.DeepEqual(c.Modules, []string{"vfat", "nls_cp437"}) {
				t.Errorf("Modules = %q", c.Modules)
			}
			if len(c.Warnings) != 0 {
				t.Errorf("unexpected warnings %q", c.Warnings)
			}
		}},
		{"standard", `root=PARTLABEL=ROOT rootfstype=ext4 rootflags=noatime ro init=/lib/systemd/systemd ip=dhcp console=tty0 console=ttyS0,115200`, func(t *testing.T, c Cmdline) {
			want := Cmdline{Root: "PARTLABEL=ROOT", RootFSType: "ext4", RootFlags: "noatime", ReadOnly: true,
				Init: "/lib/systemd/systemd", IP: "dhcp", Consoles: []string{"tty0", "ttyS0,115200"},
				Wait: DefaultWait, RebootDelay: DefaultRebootDelay, PromptTimeout: DefaultPromptTimeout}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("got %+v\nwant %+v", c, want)
			}
		}},
		{"last ro/rw wins", "ro rw", func(t *testing.T, c Cmdline) {
			if c.ReadOnly {
				t.Error("rw after ro should win")
			}
		}},
		{"bad values warn and keep defaults", "cryptinit.wait=soon cryptinit.debug=yes cryptinit.bogus=1 init=", func(t *testing.T, c Cmdline) {
			if c.Wait != DefaultWait || c.DebugShell || c.Init != DefaultInit {
				t.Errorf("bad values changed settings: %+v", c)
			}
			joined := strings.Join(c.Warnings, "\n")
			for _, w := range []string{"cryptinit.wait", "cryptinit.debug", "cryptinit.bogus"} {
				if !strings.Contains(joined, w) {
					t.Errorf("no warning about %s in %q", w, joined)
				}
			}
		}},
		{"go durations", "cryptinit.wait=1m30s cryptinit.reboot-delay=250ms", func(t *testing.T, c Cmdline) {
			if c.Wait != 90*time.Second || c.RebootDelay != 250*time.Millisecond {
				t.Errorf("got wait %v delay %v", c.Wait, c.RebootDelay)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, Parse(tc.in)) })
	}
}
