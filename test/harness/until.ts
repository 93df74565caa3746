/**
 * Polls `check` every `everyMs` until it returns something other than `false` or `undefined`, and
 * returns that; throws once `timeoutMs` has passed. The one poll of the tests: a wait on a block
 * job's events is the driver's (`nextJobChange`).
 */
export async function until<T>(
  check: () => T | Promise<T>,
  timeoutMs = 60_000,
  everyMs = 100,
): Promise<Exclude<T, false | undefined>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== false && value !== undefined) return value as Exclude<T, false | undefined>;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
