# Cardinal's build and test entry points. `make test` is the one command CI
# runs (.ci/run): it installs what the tests need when it is missing, then
# runs every check.

GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
PROMETHEUS  ?= /usr/bin/prometheus
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS     := -s -w -X main.version=$(VERSION)

.PHONY: all build test deps fmt-check vet staticcheck unit e2e bench fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/cardinal ./cmd/cardinal

## test: everything CI checks, in order of cost.
test: deps fmt-check vet staticcheck unit

# The end-to-end tests start real Prometheus 2.42 processes (Debian package
# `prometheus`). CARDINAL_E2E=require turns a missing binary into a failure
# instead of a skip, so CI can never pass without them.
deps:
	@if [ ! -x $(PROMETHEUS) ]; then \
		echo ">> installing prometheus (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	fi
	@$(PROMETHEUS) --version 2>&1 | head -1

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(STATICCHECK) ./...

unit:
	CARDINAL_E2E=require $(GO) test -race -count=1 -timeout 30m ./...

## e2e: only the end-to-end tests against real Prometheus.
e2e: deps
	CARDINAL_E2E=require $(GO) test -race -count=1 -run 'E2E' -v ./e2e/...

## bench: the Go benchmarks of the hot path.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./wire/ ./relabel/ ./gateway/ ./ingest/

## fuzz: a short run of every fuzz target.
fuzz:
	$(GO) test ./wire/ -run '^$$' -fuzz FuzzUnmarshal -fuzztime 60s
	$(GO) test ./relabel/ -run '^$$' -fuzz FuzzApply -fuzztime 60s
	$(GO) test ./ingest/ -run '^$$' -fuzz FuzzHandler -fuzztime 60s

clean:
	rm -rf bin
