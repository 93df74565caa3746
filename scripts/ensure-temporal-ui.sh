#!/usr/bin/env bash
# Prints the path of the Temporal Web UI server (`temporal-ui-server`) at the pinned version, built
# once from its Go module (the one the Temporal CLI embeds; its built pages ship in the module)
# into the per-user cache shared by every clone, like scripts/ensure-temporal-server.sh.
set -euo pipefail
version="${TEMPORAL_UI_VERSION:-v2.42.1}"
cache="${LIVE_MERGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/live-merge}"
bindir="$cache/temporal-ui-$version"
bin="$bindir/temporal-ui-server"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
command -v go >/dev/null 2>&1 || { echo "ensure-temporal-ui: Go is needed to build the Temporal UI server $version and is not on PATH" >&2; exit 1; }
mkdir -p "$bindir"
exec 9>"$bindir/.lock"
flock 9
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
echo "ensure-temporal-ui: building the Temporal UI server $version once into $bindir (first time on this machine only)" >&2
start=$(date +%s)
tmp="$bindir/.build"
rm -rf "$tmp"; mkdir -p "$tmp"
(cd /tmp && GOBIN="$tmp" CGO_ENABLED=0 go install -ldflags "-s -w" "github.com/temporalio/ui-server/v2/cmd/server@$version") >&2
mv "$tmp/server" "$bin"
rmdir "$tmp"
echo "ensure-temporal-ui: built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
