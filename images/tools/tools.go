//go:build tools

// Package tools pins the build tools the image build runs with `go build`, so
// the project's go.mod fixes their versions and a fresh machine builds the same
// binaries. It is never compiled into anything.
package tools

import (
	_ "github.com/u-root/mkuimage/cmd/mkuimage"
)
