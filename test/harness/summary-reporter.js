// eslint-disable-next-line @typescript-eslint/no-require-imports -- jest loads reporters as CommonJS
const { appendFileSync } = require('node:fs');

/**
 * Prints the plain closing line CI reads: `tests: N passed, N failed`. With LIVE_MERGE_TEST_COUNTS
 * set (scripts/test.sh, which runs jest twice), it appends `N passed, N failed` to that file
 * instead, and the script prints one line for both runs.
 */
class SummaryReporter {
  onRunComplete(_contexts, results) {
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    const counts = `${results.numPassedTests} passed, ${failed} failed`;
    const file = process.env.LIVE_MERGE_TEST_COUNTS;
    if (file) appendFileSync(file, `${counts}\n`);
    else process.stdout.write(`\ntests: ${counts}\n`);
  }
}
module.exports = SummaryReporter;
