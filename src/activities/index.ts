import { createCancelBlockJob } from './cancel-block-job';
import { createCleanup } from './cleanup';
import { createDeleteVolume } from './delete-volume';
import type { HostDeps } from './deps';
import { keepAlive } from './keep-alive';
import { createStartOrAdoptCommit } from './merge';
import { createOfflineCommit } from './offline-commit';
import { createOfflineRelink } from './offline-relink';
import { createSetBlockJobSpeed } from './set-block-job-speed';
import { createVerifyChain } from './verify-chain';
import { createWaitForBlockJob } from './wait-for-block-job';

export type { HostDeps } from './deps';

/** The activities a host agent runs on its own task queue, bound to that host's driver. */
export function createHostActivities(deps: HostDeps) {
  return {
    // Registered as `merge`: the name recorded histories schedule it by.
    merge: keepAlive(createStartOrAdoptCommit(deps)),
    waitForBlockJob: createWaitForBlockJob(deps),
    verifyChain: keepAlive(createVerifyChain(deps)),
    deleteVolume: keepAlive(createDeleteVolume(deps)),
    cleanup: keepAlive(createCleanup(deps)),
    cancelBlockJob: createCancelBlockJob(deps),
    setBlockJobSpeed: keepAlive(createSetBlockJobSpeed(deps)),
    offlineCommit: keepAlive(createOfflineCommit(deps)),
    offlineRelink: keepAlive(createOfflineRelink(deps)),
  };
}

export type HostActivities = ReturnType<typeof createHostActivities>;
