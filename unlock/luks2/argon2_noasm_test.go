//go:build !amd64 || purego

package luks2

import "testing"

// argon2Paths runs f with the only compression this build has, pure Go.
func argon2Paths(t *testing.T, f func(t *testing.T)) { t.Run("generic", f) }
