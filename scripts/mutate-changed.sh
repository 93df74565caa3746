#!/usr/bin/env bash
# make mutate-ci (run by .ci/run): the mutation score cannot fall unnoticed.
# - No code under src/ or test/ and no stryker.config.json change since
#   test/mutation/stryker-incremental.json was last committed: the record stands; its score per file is
#   printed (test/mutation/scores.ts), and this fails when a mutated file has no result, the total is
#   below the break threshold, or a survivor is neither killed nor listed in equivalent-mutants.md.
# - Otherwise StrykerJS runs incrementally over the whole set (`npm run mutate`): it reuses each
#   recorded result whose code and tests are unchanged and tests the rest again.
#   Within MUTATE_BUDGET_SECONDS (default 600): a run past it fails, so that the new results are
#   recorded and committed with the change.
set -euo pipefail
cd "$(dirname "$0")/.."
record=test/mutation/stryker-incremental.json
budget=${MUTATE_BUDGET_SECONDS:-600}
since=$(git log -1 --format=%H -- "$record" 2>/dev/null || true)
if [ -z "$since" ]; then
  echo "mutate-ci: no recorded run in $record (make mutate records one)" >&2
  exit 1
fi
code=('src/*.ts' 'test/*.ts' 'test/*.js' 'test/*.mjs')
mapfile -t changed < <(
  git diff --name-only "$since" -- "${code[@]}" stryker.config.json
  git ls-files --others --exclude-standard -- "${code[@]}"
)
if [ "${#changed[@]}" -eq 0 ]; then
  echo "mutate-ci: nothing mutated or testing it changed since the recorded run (${since:0:12}); the record stands"
  exec npx tsx test/mutation/scores.ts
fi
echo "mutate-ci: changed since ${since:0:12}: ${changed[*]}; incremental run (budget ${budget} s)"
status=0
timeout "$budget" npx stryker run --incremental || status=$?
if [ "$status" -eq 124 ]; then
  echo "mutate-ci: over the ${budget} s budget; run make mutate (or npx stryker run --incremental --mutate <file>) and commit $record" >&2
fi
exit "$status"
