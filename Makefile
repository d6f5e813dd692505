# Payment & refund callback gateway. `make run` and `make test` are all a
# newcomer needs; see README.md.
SHELL := /bin/bash
GO ?= go
PKGS := ./...

# Tests use the real MariaDB and Redis when reachable (CI requires them).
GATEWAY_TEST_MYSQL_DSN ?= root@tcp(127.0.0.1:3306)/test
GATEWAY_TEST_REDIS_ADDR ?= 127.0.0.1:6379
export GATEWAY_TEST_MYSQL_DSN GATEWAY_TEST_REDIS_ADDR

.PHONY: run build test lint vet fmt-check unit fuzz fuzz-short bench chaos soak migrate clean

# Fuzz targets as package:FuzzName:runs; seed corpora live in <package>/testdata/fuzz/<FuzzName>/.
# runs is how many inputs `make fuzz-short` tries (1–3 s each here).
FUZZ_TARGETS := ./gateway/wechatpay:FuzzParse:1000 ./gateway/wechatpay:FuzzSignedNotification:300 ./gateway:FuzzOrderRequest:3000 ./gateway:FuzzRefundRequest:3000
FUZZTIME ?= 30s

## run: gateway on SQLite (.run/gateway.db) with the WeChat Pay and inventory simulators in-process
run:
	$(GO) run ./cmd/gateway dev

## build: binaries into bin/
build:
	$(GO) build -o bin/ ./cmd/...

## test: vet, format check, the whole suite with the race detector, a few seconds of each fuzz target
test: lint unit fuzz-short

lint: vet fmt-check

# -race: vet compiles the dependencies exactly as `unit` needs them, and the
# tests build the gateway binary with -race too (cmd/internal/stack), so a
# cold `make test` compiles them (SQLite's engine above all) once, not twice.
vet:
	$(GO) vet -race $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## fuzz: run each fuzz target for FUZZTIME (default 30s)
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do IFS=: read -r pkg name runs <<< "$$t"; \
	time=$(FUZZTIME); [ "$$time" = runs ] && time=$${runs}x; \
	echo "fuzz $$name ($$pkg) for $$time"; \
	$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$time $$pkg; done

# A count, not a duration: go1.26's fuzzer can fail a clean run with "context
# deadline exceeded" when a duration ends mid-input (golang/go#75804, fixed in go1.27).
fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=runs

## bench: gateway throughput/latency vs the bare-DB ceiling on MariaDB and SQLite; writes BENCHMARKS.md
bench:
	$(GO) run ./cmd/gwbench $(BENCH_FLAGS)

## chaos: 100,000 notifications under kills, Redis and MariaDB outages, inventory faults (minutes; not in `make test`)
chaos:
	$(GO) run ./cmd/chaos $(CHAOS_FLAGS)

## soak: 10 minutes of steady, fault-free load (200 deliveries/s, refunds, finance reads); fails on anything growing without bound
SOAK_FLAGS ?= -soak 10m
soak:
	$(GO) run ./cmd/chaos $(SOAK_FLAGS)

## migrate: apply migrations to the database of CONFIG (or GATEWAY_CONFIG / GATEWAY_DATABASE_DSN)
migrate:
	$(GO) run ./cmd/gateway migrate $(if $(CONFIG),--config $(CONFIG))

clean:
	rm -rf bin .run
