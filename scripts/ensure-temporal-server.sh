#!/usr/bin/env bash
# Prints the directory holding the Temporal server (`temporal-server`) and its SQL schema tool
# (`temporal-sql-tool`) at the pinned version, built once from the Go module proxy into the per-user
# cache shared by every clone (like scripts/ensure-temporal.sh for the CLI).
#
# Why v1.29.1: the version docker-compose.yml pins; later releases need a newer Go than this machine's.
set -euo pipefail
version="${TEMPORAL_SERVER_VERSION:-v1.29.1}"
cache="${LIVE_MERGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/live-merge}"
bindir="$cache/temporal-server-$version"

ready() { [ -x "$bindir/temporal-server" ] && [ -x "$bindir/temporal-sql-tool" ]; }
if ready; then echo "$bindir"; exit 0; fi

command -v go >/dev/null 2>&1 || { echo "ensure-temporal-server: Go is needed to build the Temporal server $version and is not on PATH" >&2; exit 1; }
mkdir -p "$bindir"
exec 9>"$bindir/.lock"
flock 9
if ready; then echo "$bindir"; exit 0; fi
echo "ensure-temporal-server: building the Temporal server $version once into $bindir (first time on this machine only: minutes)" >&2
start=$(date +%s)
tmp="$bindir/.build"
rm -rf "$tmp"; mkdir -p "$tmp"
(cd /tmp && GOBIN="$tmp" CGO_ENABLED=0 go install -ldflags "-s -w" \
  "go.temporal.io/server/cmd/server@$version" "go.temporal.io/server/cmd/tools/sql@$version") >&2
# go install names them after their package directories.
mv "$tmp/sql" "$bindir/temporal-sql-tool"
mv "$tmp/server" "$bindir/temporal-server"
rmdir "$tmp"
echo "ensure-temporal-server: built in $(( $(date +%s) - start )) s" >&2
echo "$bindir"
