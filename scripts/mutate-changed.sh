#!/usr/bin/env bash
# make mutate-ci (run by .ci/run): the mutation score cannot fall unnoticed. For each mutation set
# (a StrykerJS config, its record and its jest config; test/mutation/scores.ts --sets lists them):
# - Nothing that can change one of the set's results changed since its record was last committed:
#   the record stands. Counted: code under src/; the test files the set's jest config runs; the
#   helpers under test/; the set's own StrykerJS and jest configs and the files they build on;
#   stryker.config.json, the base of every set, unless the set's options are still those its record
#   was made with (test/mutation/config-unchanged.ts). Not counted: test files the set does not run
#   (the fault, guest, cluster suites…), the other sets' configs, the tools in test/mutation/*.ts
#   (scores.ts and the like: StrykerJS runs none of them) and this script.
# - Otherwise StrykerJS runs that set incrementally: it reuses each recorded result whose code and
#   tests are unchanged and tests the rest again, within MUTATE_BUDGET_SECONDS (default 600): a run
#   past it fails, so that the new results are recorded and committed with the change.
# Then the score per file of every set is printed (scores.ts), and this fails when a mutated file has
# no result, the total is below the break threshold, or a survivor is neither killed nor listed in
# equivalent-mutants.md.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${MUTATE_BUDGET_SECONDS:-600}
code=('src/*.ts' 'test/*.ts' 'test/*.js' 'test/*.mjs')
mapfile -t sets < <(npx tsx test/mutation/scores.ts --sets)
# The test files each jest config runs, listed once (most sets share one config).
declare -A tests_of
for set in "${sets[@]}"; do
  read -r _ _ jest_config <<<"$set"
  [ -v "tests_of[$jest_config]" ] || tests_of[$jest_config]=$(npx jest --config "$jest_config" --listTests | sed "s|^$PWD/||")
done

# Prints the changed files (read from stdin) that can change a result of the set $config.
counted() {
  local file
  while read -r file; do
    case $file in
      *.test.ts) grep -qxF -- "$file" <<<"${tests_of[$jest_config]}" || continue ;;
      test/mutation/*.ts) continue ;;
      test/mutation/stryker.*.config.mjs) [ "$file" = "$config" ] || continue ;;
      test/mutation/jest.*.config.js) [ "$file" = "$jest_config" ] || continue ;; # test/mutation/jest.config.js, the base, always counts
      stryker.config.json) [ "$file" = "$config" ] || ! npx tsx test/mutation/config-unchanged.ts "$config" "$record" || continue ;;
    esac
    echo "$file"
  done
}

for set in "${sets[@]}"; do
  read -r config record jest_config <<<"$set"
  since=$(git log -1 --format=%H -- "$record" 2>/dev/null || true)
  if [ -z "$since" ]; then
    echo "mutate-ci: no recorded run in $record (make mutate records one)" >&2
    exit 1
  fi
  mapfile -t changed < <(
    {
      git diff --name-only "$since" -- "${code[@]}" stryker.config.json
      git ls-files --others --exclude-standard -- "${code[@]}"
    } | counted
  )
  if [ "${#changed[@]}" -eq 0 ]; then
    echo "mutate-ci: $config: nothing that can change its results changed since the recorded run (${since:0:12}); the record stands"
    continue
  fi
  echo "mutate-ci: $config: changed since ${since:0:12}: ${changed[*]}; incremental run (budget ${budget} s)"
  status=0
  timeout "$budget" npx stryker run --incremental "$config" || status=$?
  if [ "$status" -eq 124 ]; then
    echo "mutate-ci: over the ${budget} s budget; run scripts/mutate.sh $config (or npx stryker run --incremental $config --mutate <file>) and commit $record" >&2
  fi
  [ "$status" -eq 0 ] || exit "$status"
done
exec npx tsx test/mutation/scores.ts
