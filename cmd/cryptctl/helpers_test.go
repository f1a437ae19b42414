package main

import (
	"bytes"
	"testing"
)

// cryptctl runs the command line in-process, with an empty stdin, and
// returns its output (stdout and stderr together) and error.
func cryptctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetIn(bytes.NewReader(nil))
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}
