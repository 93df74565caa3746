#!/usr/bin/env bash
# make mutate-ci (run by .ci/run): the mutation score cannot fall unnoticed. For each mutation set
# (a StrykerJS config and its record; test/mutation/scores.ts --sets lists them):
# - No code under src/ or test/ and no StrykerJS config changed since the set's record was last
#   committed: the record stands. A test file that no mutation set's jest config runs (the fault,
#   guest, cluster suites…) changes no result and is not counted; helpers under test/ are.
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
mapfile -t mutation_tests < <(
  for jest_config in test/mutation/jest*.config.js; do npx jest --config "$jest_config" --listTests; done |
    sed "s|^$PWD/||" | sort -u
)
# Prints the changed files that can change a mutation result.
counted() {
  local file
  while read -r file; do
    if [[ $file == *.test.ts ]] && ! printf '%s\n' "${mutation_tests[@]}" | grep -qxF -- "$file"; then continue; fi
    echo "$file"
  done
}
for set in "${sets[@]}"; do
  read -r config record <<<"$set"
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
    echo "mutate-ci: $config: nothing mutated or testing it changed since the recorded run (${since:0:12}); the record stands"
    continue
  fi
  echo "mutate-ci: $config: changed since ${since:0:12}: ${changed[*]}; incremental run (budget ${budget} s)"
  status=0
  timeout "$budget" npx stryker run --incremental "$config" || status=$?
  if [ "$status" -eq 124 ]; then
    echo "mutate-ci: over the ${budget} s budget; run make mutate (or npx stryker run --incremental $config --mutate <file>) and commit $record" >&2
  fi
  [ "$status" -eq 0 ] || exit "$status"
done
exec npx tsx test/mutation/scores.ts
