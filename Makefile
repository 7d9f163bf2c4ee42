# Cardinal's build and test entry points. `make test` is the one command CI
# runs (.ci/run): it installs what the tests need when it is missing, then
# runs every check.

GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
PROMETHEUS  ?= /usr/bin/prometheus
VMAGENT     ?= /usr/bin/vmagent
# Prometheus 3 for the remote write 2.0 tests: built from the module proxy
# (without the builtinassets tag: the module has no UI assets).
PROMETHEUS3_VERSION = v0.316.0
PROMETHEUS3 ?= $(CURDIR)/bin/prom3/prometheus
HELM_VERSION = v3.22.0
HELM        ?= $(shell command -v helm 2>/dev/null || echo $$($(GO) env GOPATH)/bin/helm)
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS     := -s -w -X main.version=$(VERSION)

.PHONY: peer all build test test-steps reliability deps fmt-check vet staticcheck static-build helm-lint unit allocs e2e bench fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/cardinal ./cmd/cardinal

## test: everything CI checks, in order of cost, with a one-line verdict.
test:
	@start=$$(date +%s); \
	if $(MAKE) --no-print-directory test-steps; then \
		echo ">> make test: PASS in $$(( $$(date +%s) - start ))s"; \
	else \
		echo ">> make test: FAIL after $$(( $$(date +%s) - start ))s (the first failing step is above)"; exit 1; \
	fi

test-steps: deps fmt-check vet staticcheck static-build unit allocs

# The end-to-end tests start real Prometheus 2.42 processes (Debian package
# `prometheus`), and Prometheus 3 (bin/prom3, built once) for remote write
# 2.0; bench/load's smoke test runs vmagent (`victoria-metrics`), the chart tests (deploy/helmtest) run helm. CARDINAL_E2E=require
# turns a missing binary into a failure instead of a skip, so CI can never pass
# without them.
deps:
	@if [ ! -x $(PROMETHEUS) ]; then \
		echo ">> installing prometheus (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	fi
	@$(PROMETHEUS) --version 2>&1 | head -1
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo ">> installing chromium (Debian package), for the explorer page's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@if [ ! -x $(VMAGENT) ]; then \
		echo ">> installing vmagent (Debian package victoria-metrics), the performance peer"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq victoria-metrics >/dev/null; \
	fi
	@if [ ! -x $(PROMETHEUS3) ]; then \
		echo ">> building prometheus $(PROMETHEUS3_VERSION) into bin/prom3 for the remote write 2.0 tests (go install, several minutes the first time)"; \
		GOBIN=$(CURDIR)/bin/prom3 $(GO) install github.com/prometheus/prometheus/cmd/prometheus@$(PROMETHEUS3_VERSION); \
	fi
	@$(PROMETHEUS3) --version 2>&1 | head -1; $(GO) version -m $(PROMETHEUS3) | grep -m1 'mod\s*github.com/prometheus/prometheus'
	@command -v helm >/dev/null 2>&1 || [ -x "$$($(GO) env GOPATH)/bin/helm" ] || { \
		echo ">> installing helm $(HELM_VERSION) (go install, takes a few minutes)"; \
		$(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }
	@$(HELM) version --short

fmt-check:
	@echo ">> gofmt"
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	@echo ">> go vet"
	@$(GO) vet ./...

staticcheck:
	@echo ">> staticcheck"
	@$(STATICCHECK) ./...

# static-build: the Dockerfile's build, checked without Docker: no cgo, no
# program interpreter or shared libraries, version stamped.
static-build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-X main.version=test' -o bin/cardinal-static ./cmd/cardinal
	@$(GO) version -m bin/cardinal-static | grep -q 'CGO_ENABLED=0' || { echo "bin/cardinal-static: not built with CGO_ENABLED=0"; exit 1; }
	@if command -v readelf >/dev/null 2>&1; then \
		if readelf -l bin/cardinal-static | grep -q INTERP; then echo "bin/cardinal-static: has a program interpreter (dynamically linked)"; exit 1; fi; \
		if readelf -d bin/cardinal-static | grep -q NEEDED; then echo "bin/cardinal-static: needs shared libraries"; exit 1; fi; \
	elif command -v file >/dev/null 2>&1; then \
		file bin/cardinal-static | grep -q 'statically linked' || { file bin/cardinal-static; exit 1; }; \
	elif command -v ldd >/dev/null 2>&1; then \
		ldd bin/cardinal-static 2>&1 | grep -q 'not a dynamic executable' || { ldd bin/cardinal-static; exit 1; }; \
	else echo "no readelf, file or ldd: relying on the CGO_ENABLED=0 build setting"; fi
	@out="$$(bin/cardinal-static version)"; [ "$$out" = "cardinal test" ] || { echo "bin/cardinal-static version printed '$$out', want 'cardinal test'"; exit 1; }
	@echo ">> bin/cardinal-static: statically linked, version stamped"

## helm-lint: lint the chart in both modes (the Go tests in deploy/helmtest do more).
helm-lint:
	$(HELM) lint --strict deploy/helm/cardinal
	$(HELM) lint --strict deploy/helm/cardinal --set mode=sidecar --set sidecar.prometheusDeployment.enabled=true

unit:
	@echo ">> go test -race ./... (unit and end-to-end tests, a few minutes)"
	CARDINAL_E2E=require PROMETHEUS3_BINARY=$(PROMETHEUS3) $(GO) test -race -count=1 -timeout 30m ./...
	@echo ">> the gateway's tests again, every request sent as remote write 2.0"
	CARDINAL_TEST_RW=2 $(GO) test -race -count=1 ./gateway/

# allocs: the race detector allocates, so every AllocsPerRun proof skips
# under -race; this step runs the unit tests again without it, so that the
# allocation budgets are checked. (The e2e, chart and load-tool tests have
# none and already ran.)
UNIT_PKGS = $(shell $(GO) list ./... | grep -v -e /e2e -e /deploy/ -e /bench/load -e /internal/promtest -e /reliability)
allocs:
	@echo ">> go test without -race (allocation proofs)"
	@$(GO) test -count=1 $(UNIT_PKGS)
	@CARDINAL_TEST_RW=2 $(GO) test -count=1 -run 'Alloc' ./gateway/

## reliability: the whole reliability suite (reliability/README.md): every
## downstream fault, overload and slow bodies with their RSS figures, kill -9
## with a real Prometheus. About ten minutes; its quick part runs in make test.
reliability: deps
	CARDINAL_RELIABILITY=full CARDINAL_E2E=require $(GO) test -count=1 -v -timeout 40m ./reliability/

## e2e: only the end-to-end tests against real Prometheus.
e2e: deps
	CARDINAL_E2E=require $(GO) test -race -count=1 -run 'E2E' -v ./e2e/...

## bench: the Go benchmarks of the hot path.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./wire/ ./relabel/ ./gateway/ ./ingest/

## fuzz: every fuzz target for FUZZTIME each (make fuzz FUZZTIME=10m), with
## FUZZPARALLEL workers (default: one per core).
FUZZTIME ?= 60s
FUZZPARALLEL ?= 0
# Minimizing each new interesting input for Go's default minute stalls the
# targets whose inputs are whole requests: a few seconds keep them running.
FUZZMINIMIZETIME ?= 5s
FUZZ_TARGETS ?= wire:FuzzUnmarshal wire:FuzzUnmarshalV2 wire:FuzzValidateHistogram relabel:FuzzApply ingest:FuzzHandler ingest:FuzzPipeline \
	gateway:FuzzGateway gateway:FuzzClusterParts tracesample:FuzzParse config:FuzzParse admin:FuzzParseLimit \
	admin:FuzzLoadState merge:FuzzLoadState internal/rematch:FuzzMatch internal/snappycut:FuzzCut
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; \
		echo ">> $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test ./$$pkg/ -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) \
			$$( [ "$(FUZZPARALLEL)" = 0 ] || echo -parallel $(FUZZPARALLEL) ) || exit 1; \
	done

## peer: the vmagent release the benchmark compares with, into bin/peer.
peer: bin/peer/vmagent
bin/peer/vmagent:
	GOBIN=$(CURDIR)/bin/peer $(GO) install github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent@v1.151.0

clean:
	rm -rf bin
