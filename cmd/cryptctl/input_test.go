package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
	"github.com/spf13/cobra"
)

func TestReadKeyFile(t *testing.T) {
	for _, c := range []struct {
		name, path, stdin string
		want, wantErr     string
	}{
		{name: "file", path: luks2test.KeyFile(t, []byte("k\n")), want: "k\n"},
		{name: "stdin", path: "-", stdin: "from stdin", want: "from stdin"},
		{name: "missing flag", path: "", wantErr: "--key-file is required"},
		{name: "empty file", path: luks2test.KeyFile(t, nil), wantErr: "empty key"},
		{name: "empty stdin", path: "-", wantErr: "empty key"},
		{name: "no such file", path: "/nonexistent/key", wantErr: "--key-file: open /nonexistent/key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := &cobra.Command{}
			cmd.SetIn(strings.NewReader(c.stdin))
			got, err := readKeyFile(cmd, "key-file", c.path)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, []byte(c.want)) {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestOpenDeviceSize(t *testing.T) {
	f, size, err := openDevice(luks2test.NewImage(t, 3<<20), false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if size != 3<<20 {
		t.Errorf("size %d, want %d", size, 3<<20)
	}
	if _, _, err := openDevice("/nonexistent/disk.img", true); err == nil {
		t.Error("opening a missing device succeeded")
	}
}
