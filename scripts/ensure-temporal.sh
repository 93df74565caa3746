#!/usr/bin/env bash
# Prints the path of a Temporal CLI at the pinned version, building it once into a per-user
# cache outside the work tree, shared by every clone on this machine.
#
# Why v1.5.1: releases from v1.6.0 on carry `replace github.com/temporalio/cli/cliext => ./cliext`,
# and cliext is a nested module the Go module proxy neither ships in the release zip nor serves on
# its own, so they cannot be built from the proxy. v1.5.1 is the newest release that builds here.
set -euo pipefail
version="${TEMPORAL_CLI_VERSION:-v1.5.1}"
cache="${LIVE_MERGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/live-merge}"
bindir="$cache/temporal-$version"
bin="$bindir/temporal"

if onpath=$(command -v temporal 2>/dev/null) && "$onpath" --version 2>/dev/null | grep -q "temporal version ${version#v} "; then
  echo "$onpath"; exit 0
fi
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi

command -v go >/dev/null 2>&1 || { echo "ensure-temporal: Go is needed to build the Temporal CLI $version and is not on PATH" >&2; exit 1; }
mkdir -p "$bindir"
exec 9>"$bindir/.lock"
flock 9
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
echo "ensure-temporal: building the Temporal CLI $version once into $bindir (first time on this machine only: several minutes)" >&2
start=$(date +%s)
(cd /tmp && GOBIN="$bindir" CGO_ENABLED=0 go install -ldflags "-X github.com/temporalio/cli/temporalcli.Version=${version#v}" "github.com/temporalio/cli/cmd/temporal@$version") >&2
echo "ensure-temporal: built $("$bin" --version) in $(( $(date +%s) - start )) s" >&2
echo "$bin"
