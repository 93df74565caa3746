# The two commands: `make demo` (a live merge on a real VM, end to end) and `make test`.
# Each sets up what it needs first, so either works as the first command on a fresh clone;
# a second run finds everything in place and does no set-up work again.
SHELL := /bin/bash
.DEFAULT_GOAL := help
DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: help setup demo test bench lint mutate mutate-full mutate-ci qemu temporal chromium guest libvirt cluster cluster-down cluster-setup

help:
	@echo "make demo   - start a dev server, workers and a lab VM, and merge a snapshot of 2 disks"
	@echo "make test   - the test suite: three jest runs (the suite on real QEMU and dev servers; the guest and libvirt tests, then the cluster tests, each one at a time)"
	@echo "              options: make demo DEMO_ARGS=--keep   (leave the stack up for inspection)"
	@echo "make lint   - ESLint and the Prettier check (npm run lint, npm run format:check)"
	@echo "make mutate - mutation testing of the safety checks: the record's killed mutants reused where unchanged, the rest tested (StrykerJS; reports in test-artifacts/mutation/)"
	@echo "make mutate-full - the same, every mutant run again"
	@echo "make mutate-ci - the recorded scores, or only the mutants changed since the recorded run (within a time budget)"
	@echo "make cluster - the production topology here: PostgreSQL, Temporal as 5 processes with mTLS, Web UI, 2 engine workers,"
	@echo "               3 hosts each in its own network namespace with a lab VM and agent; up until Ctrl-C"
	@echo "make cluster-down - stop the cluster make cluster started (by pid)"
	@echo "make bench  - the benchmarks (overhead, detection, throughput, history, guard, busy-host, guest-view); BENCH_ARGS=--quick for CI's short run"

setup: node_modules/.installed qemu temporal chromium guest libvirt cluster-setup

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

qemu:
	@bash scripts/ensure-qemu.sh

temporal:
	@bash scripts/ensure-temporal.sh >/dev/null

# The cluster's programs: PostgreSQL (apt-get when missing), temporal-server, temporal-sql-tool and the Web UI
# server built once into ~/.cache/live-merge/ (scripts/ensure-temporal-server.sh, ensure-temporal-ui.sh).
cluster-setup:
	@bash scripts/ensure-postgres.sh
	@bash scripts/ensure-temporal-server.sh >/dev/null
	@bash scripts/ensure-temporal-ui.sh >/dev/null

chromium:
	@bash scripts/ensure-chromium.sh

# The lab's guest OS (Debian's cloud kernel, busybox, lab/guest/writer.c), cached in ~/.cache/live-merge/guest-<hash>/.
guest: node_modules/.installed
	@bash scripts/ensure-guest.sh >/dev/null

# libvirtd with its QEMU driver, running (no systemd): for the libvirt driver's tests and DEMO_ARGS=--libvirt.
libvirt: qemu
	@bash scripts/ensure-libvirt.sh

demo: setup
	npx tsx lab/demo/main.ts $(DEMO_ARGS)

test: setup
	npx tsc --noEmit -p .
	bash scripts/test.sh

lint: node_modules/.installed
	npm run --silent lint
	npm run --silent format:check

# Not part of the test suite: a full run takes about 75 minutes; --quick about 5.
bench: setup
	npx tsx bench/run.ts $(BENCH_ARGS)

# Mutation testing (stryker.config.json, test/mutation/; scripts/mutate.sh): `make mutate` reuses,
# set by set, the results of each set's record whose code and tests are unchanged, tests the rest,
# and records the results there; `make mutate-full` runs every mutant again; `make mutate-ci`
# (scripts/mutate-changed.sh, in CI) prints the record's scores when nothing it depends on changed
# since it was committed, and otherwise runs only the changed mutants within MUTATE_BUDGET_SECONDS.
# Each fails below the break threshold (90 %).
mutate: node_modules/.installed qemu
	npm run --silent mutate

mutate-full: node_modules/.installed qemu
	npm run --silent mutate:full

mutate-ci: node_modules/.installed qemu
	npm run --silent mutate:ci

# The production topology (lab/cluster/): up until Ctrl-C; state in .lab/cluster/, pids in .lab/cluster-state.json.
cluster: setup
	npx tsx lab/cluster/main.ts

cluster-down: node_modules/.installed
	npx tsx lab/cluster/down.ts
