// Package readmetest runs the operator sessions of the top-level README as
// printed. A session is a ```sh block right after a line
//
//	<!-- session: NAME -->
//
// Each runs in its own empty temporary directory under bash -e -u -o
// pipefail, with freshly built cmd/... binaries (cryptctl, kms-server, ...)
// first on PATH; any failing command fails the test, and so does a process
// the session leaves running (it is killed). The package has no code
// besides the test.
package readmetest
