# cryptinit build and test entry points. The README names two of them:
#   make demo   builds the images and boots a node that unlocks its disks
#   make test   installs what is missing, then runs every test (unit + VM)
SHELL := /bin/bash
# setup.sh installs Go into /usr/local/go when the one on PATH is too old
# (Debian 12 ships 1.19); put it first so every target uses it.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
OUT ?= $(CURDIR)/out
export CGO_ENABLED ?= 1

.PHONY: all setup build test test-unit test-vm fuzz bench image demo clean

all: build

setup:
	bash images/setup.sh

# VERSION and COMMIT go into `cryptctl version` and `kms-server version`
# (internal/version); Go's own VCS stamp, when it makes one, wins for the commit.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
VERSION_LDFLAGS = -X github.com/cryptinit/cryptinit/internal/version.Version=$(VERSION) -X github.com/cryptinit/cryptinit/internal/version.Commit=$(COMMIT)

build:
	mkdir -p $(OUT)/bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w $(VERSION_LDFLAGS)' -o $(OUT)/bin/ ./cmd/...

# test is the project's one test command (.ci/run calls it). It sets
# CRYPTINIT_STRICT=1: a test that would skip because a tool (cryptsetup, mkfs,
# swtpm, qemu), the TPM simulator or a built artifact is missing fails instead
# (internal/testenv).
test: export CRYPTINIT_STRICT := 1
test: setup
	$(MAKE) test-unit fuzz test-vm

test-unit:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

# fuzz runs every fuzz target for a bounded number of executions. A count, not
# a duration: Go 1.26's fuzz coordinator can report a spurious "context deadline
# exceeded" when a -fuzztime duration expires on a loaded machine
# (golang/go#75804); a count has no deadline to race. A real finding still
# fails the run and writes its input under testdata/fuzz/.
FUZZTIME ?= 10000x
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -timeout 10m $$pkg; \
	  done; \
	done

# test-vm boots the images under QEMU (TCG) with OVMF and swtpm. Packages run
# one at a time (-p 1): images/vm itself keeps at most two VMs up at once,
# which is what two cores can carry. With CRYPTINIT_VM=1 a VM test that
# cannot run fails rather than skips; on top of go test's own exit status,
# the run fails when no TestVM passed or when any TestVM was skipped, so a
# run that booted nothing can never pass.
VM_PKGS ?= ./images/vm ./images/initramfs ./images/imagebuild ./tpm ./netboot
VM_RUN ?= TestVM
test-vm: image
	@set -o pipefail; log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	CRYPTINIT_VM=1 CRYPTINIT_OUT=$(OUT) $(GO) test -p 1 -count=1 -timeout 60m -v -run '$(VM_RUN)' $(VM_PKGS) 2>&1 | tee "$$log"; \
	status=$$?; \
	passed=$$(grep -c -e '--- PASS: TestVM' "$$log"); \
	skipped=$$(grep -c -e '--- SKIP: TestVM' "$$log"); \
	echo "test-vm: $$passed VM test(s) passed, $$skipped skipped, go test exit status $$status"; \
	if [ "$$skipped" -ne 0 ]; then echo "test-vm: FAIL: VM tests skipped:"; grep -e '--- SKIP: TestVM' "$$log"; exit 1; fi; \
	if [ "$$status" -ne 0 ]; then exit $$status; fi; \
	if [ "$$passed" -eq 0 ]; then echo "test-vm: FAIL: no VM test ran"; exit 1; fi

# bench runs every Go benchmark, the QEMU boot benchmarks included (boot time
# and its split, initramfs compression), three iterations each, the
# whole-process KDF comparison with cryptsetup, and the image sizes next to
# booster's (images/bench/booster-sizes.sh: clones and builds booster, needs
# network or BOOSTER_SRC=<path>); it writes $(OUT)/bench/results.md
# (date, CPU, vCPUs, commit, every figure), which the README's "Measured" quotes.
bench: setup image
	mkdir -p $(OUT)/bench
	set -o pipefail; CRYPTINIT_VM=1 CRYPTINIT_OUT=$(OUT) $(GO) test -p 1 -run '^$$' -bench . -benchtime 3x -timeout 60m ./... | tee $(OUT)/bench/go-bench.txt
	bash images/bench/kdf.sh $(OUT) 5 | tee $(OUT)/bench/kdf.md
	GO=$(GO) bash images/bench/booster-sizes.sh $(OUT) >$(OUT)/bench/booster-sizes.md 2>$(OUT)/bench/booster-sizes.log || \
		echo "FAILED: images/bench/booster-sizes.sh (exit $$?), see $(OUT)/bench/booster-sizes.log" | tee $(OUT)/bench/booster-sizes.md
	bash images/bench/results.sh $(OUT)/bench/go-bench.txt $(OUT)/bench/kdf.md $(OUT)/bench/booster-sizes.md >$(OUT)/bench/results.md
	@echo "wrote $(OUT)/bench/results.md"

image:
	bash images/build.sh $(OUT)

demo: setup image
	CRYPTINIT_OUT=$(OUT) $(GO) run ./images/cmd/demo

clean:
	rm -rf $(OUT)
