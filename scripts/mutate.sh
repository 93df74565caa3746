#!/usr/bin/env bash
# make mutate / make mutate-full (npm run mutate[:full]): StrykerJS over each mutation set in turn
# (test/mutation/scores.ts --sets lists them; each has its own record), incrementally: a recorded
# result whose code and tests are unchanged is reused, the rest tested again. `--force` tests every
# mutant again. Then the score per file of every set. Run it alone on the machine: load turns slow
# kills into timeouts.
# Usage: scripts/mutate.sh [--force] [config...]   (no config: every set)
set -euo pipefail
cd "$(dirname "$0")/.."
force=()
if [ "${1:-}" = --force ]; then
  force=(--force)
  shift
fi
if [ "$#" -gt 0 ]; then
  configs=("$@")
else
  mapfile -t configs < <(npx tsx test/mutation/scores.ts --sets | cut -d' ' -f1)
fi
for config in "${configs[@]}"; do
  start=$(date +%s)
  npx stryker run --incremental "${force[@]}" "$config"
  echo "mutate: $config: $(($(date +%s) - start)) s"
done
exec npx tsx test/mutation/scores.ts
