/**
 * A file outside the walk that stats, in a directory that resolves, and that no record shares: its
 * names are followed (dependants.ts, isJudgedAlone), so a chain that leaves the storage root and
 * comes back to the volume is found.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { dependants, type Target } from '../../src/volume-users/dependants';
import { fileId as id, oneImageScan } from '../harness/index-scan';

let outsideDir: string;

beforeAll(() => {
  outsideDir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'dependants-outside-')));
});
afterAll(() => fs.rmSync(outsideDir, { recursive: true, force: true }));

test('an image backed by a file outside the root, itself backed by the volume, uses the volume', async () => {
  const outside = path.join(outsideDir, 'b.qcow2');
  const t: Target = { path: '/s/v.qcow2', id: id(1n) };
  const scan = oneImageScan('/s/c.qcow2', 3n, { backing: outside });
  const users = await dependants(t, new Set(), {
    scan,
    statOf: (p) => (p === t.path ? id(1n) : p === outside ? id(4n) : undefined),
    mounts: () => [],
    refsOf: async (p) => (p === outside ? { backing: t.path } : undefined),
  });
  expect(users).toEqual([{ kind: 'backingOf', image: '/s/c.qcow2', through: [outside] }]);
});
