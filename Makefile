# Developer commands. `make test` is the README's test command and what CI runs.
GO ?= go

.PHONY: test lint demo bench fuzz chaos

test:
	$(GO) test -race -count=1 -timeout 30m ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	@command -v staticcheck >/dev/null || (echo "staticcheck missing: go install honnef.co/go/tools/cmd/staticcheck@v0.8.2"; exit 1)
	staticcheck ./...

demo:
	$(GO) run ./examples/demo

# bench runs every geobench scenario at its issue-9 size (each prints its
# raw limit measured in the same run; see docs/performance.md), then the Go
# micro-benchmarks of the hot paths once each. BENCH_FLAGS adds flags to
# every scenario, e.g. BENCH_FLAGS='-url postgres://...'.
BENCH_SCENARIOS ?= backfill sync-small sync-large event-lag status verify claim-order existence orphans resync-all
BENCH_FLAGS ?=

bench:
	@for s in $(BENCH_SCENARIOS); do $(GO) run ./internal/cmd/geobench $$s $(BENCH_FLAGS) || exit 1; done
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

# Reliability campaigns (docs/reliability.md): every scenario at full size;
# CHAOS=crash (or any scenario) runs one, CHAOS_FLAGS=-quick the CI sizes.
CHAOS ?= all
CHAOS_FLAGS ?=

chaos:
	$(GO) build -o $${TMPDIR:-/tmp}/geochaos ./internal/cmd/geochaos
	$${TMPDIR:-/tmp}/geochaos $(CHAOS) $(CHAOS_FLAGS)

# Every fuzz target for FUZZTIME each (a duration, or a count such as 1000x,
# which CI uses), one at a time (go test -fuzz takes one).
FUZZTIME ?= 10s
FUZZ_TARGETS = FuzzValidateKey:./strategy FuzzParseToken:./internal/xfer FuzzParseID:./internal/xfer FuzzTransferPath:./internal/xfer \
	FuzzFetchResponse:./internal/xfer FuzzDecode:./events FuzzValidateName:./strategy FuzzParseAfter:./cmd/geoctl \
	FuzzCheckConn:./cmd/geoctl FuzzRedactText:./cmd/geoctl

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t%%:*} ($${t#*:}) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $(FUZZTIME) $${t#*:} || exit 1; \
	done
