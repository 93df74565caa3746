#!/usr/bin/env bash
# make mutate-ci: mutation testing of only the mutated files (stryker.config.json "mutate") that
# changed since test/mutation/stryker-incremental.json was last committed; every other recorded
# result is reused as it is (StrykerJS keeps a partial run's out-of-scope mutants in the record).
# Within a time budget, MUTATE_BUDGET_SECONDS (default 900): a run past it fails, naming the files,
# so that `make mutate` records them. Fails, as the full run does, below the break threshold.
set -euo pipefail
cd "$(dirname "$0")/.."
record=test/mutation/stryker-incremental.json
budget=${MUTATE_BUDGET_SECONDS:-900}
since=$(git log -1 --format=%H -- "$record" 2>/dev/null || true)
if [ -z "$since" ]; then
  echo "mutate-ci: no recorded run in $record (make mutate records one)" >&2
  exit 1
fi
mapfile -t patterns < <(node -e 'for (const p of require("./stryker.config.json").mutate) console.log(p)')
mapfile -t touched < <(git diff --name-only "$since" -- src; git ls-files --others --exclude-standard -- src)
selected=()
for f in "${touched[@]}"; do
  [ -f "$f" ] || continue
  pick=""
  for p in "${patterns[@]}"; do
    glob=${p%%:*}
    if [[ $glob == !* ]]; then
      # shellcheck disable=SC2053 # the pattern is a glob on purpose
      [[ $f == ${glob#!} ]] && pick=""
    elif [[ $f == $glob ]]; then # shellcheck disable=SC2053
      pick=$f
      [[ $p == *:* ]] && pick="$f:${p#*:}" # a line range of the config stays
    fi
  done
  [ -n "$pick" ] && selected+=("$pick")
done
if [ "${#selected[@]}" -eq 0 ]; then
  echo "mutate-ci: no mutated file changed since the recorded run (${since:0:12}); the record stands"
  exit 0
fi
list=$(IFS=,; echo "${selected[*]}")
echo "mutate-ci: changed since ${since:0:12}: $list (budget ${budget} s)"
status=0
timeout "$budget" npx stryker run --incremental --mutate "$list" || status=$?
if [ "$status" -eq 124 ]; then
  echo "mutate-ci: over the ${budget} s budget; run make mutate for: $list" >&2
fi
exit "$status"
