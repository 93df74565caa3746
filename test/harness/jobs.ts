import { auxQmpSocketPath } from '../../src/domain/layout';
import { QmpClient } from '../../src/drivers/qmp/client';
import { queryJobsSchema } from '../../src/drivers/qmp/schemas';

/**
 * Watches a VM's block jobs on its aux monitor: the ids of every job QEMU created (from
 * JOB_STATUS_CHANGE events), and the jobs now. Close it before the lab's verify, which needs
 * that monitor too.
 */
export async function watchJobs(runDir: string, vmId: string) {
  const qmp = await QmpClient.connect(auxQmpSocketPath(runDir, vmId));
  const created: string[] = [];
  qmp.onEvent((e) => {
    const data = e.data as { id?: string; status?: string } | undefined;
    if (e.event === 'JOB_STATUS_CHANGE' && data?.status === 'created' && data.id) created.push(data.id);
  });
  const list = () => qmp.executeParsed('query-jobs', {}, queryJobsSchema);
  const running = async () => (await list()).filter((j) => j.status === 'running').length;
  return { qmp, created, list, running, close: () => qmp.close() };
}
