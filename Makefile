# Developer commands. `make test` is the README's test command and what CI runs.
GO ?= go

.PHONY: test lint demo bench fuzz chaos

test:
	$(GO) test -race -count=1 -timeout 30m ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

demo:
	$(GO) run ./examples/demo

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...
