#!/usr/bin/env bash
# The test suite (make test, npm test) in three jest runs: the project `suite` (two files at a
# time); then the projects `guest` (test/guest/: VMs with a running guest, most of a core each
# under TCG) and `libvirt` (test/libvirt/: it restarts libvirtd) in band, one file at a time; then
# the project `cluster` (test/cluster/: the production topology) in band. Ends with ONE line
# `tests: N passed, N failed` over the three runs (what .ci/run reads); a run that ends without its
# counts (jest itself failed) counts as one failure.
set -uo pipefail
cd "$(dirname "$0")/.."
counts=$(mktemp)
trap 'rm -f "$counts"' EXIT
export LIVE_MERGE_TEST_COUNTS="$counts"
status=0
run() {
  local before after
  before=$(wc -l <"$counts")
  npx jest "$@" || status=1
  after=$(wc -l <"$counts")
  if [ "$after" -eq "$before" ]; then echo "0 passed, 1 failed" >>"$counts"; fi
}
run --selectProjects suite
run --selectProjects guest libvirt --runInBand
run --selectProjects cluster --runInBand
awk '{ passed += $1; failed += $3 } END { printf "\ntests: %d passed, %d failed\n", passed, failed }' "$counts"
exit "$status"
