/**
 * The lab command: create, inspect and remove lab VMs (flags in cli/flags.ts, output in cli/describe.ts).
 *
 *   npx tsx lab/cli.ts create  --vm-id X [--disks N] [--volumes K] [--size-mib S] [--layer-data-mib M] [--storage-root DIR]
 *                              [--paused | [--guest-rate N] [--guest-region-mib M]]
 *   npx tsx lab/cli.ts verify  --vm-id X [--flush]   (exit 1 when the check fails)
 *   npx tsx lab/cli.ts check   --vm-id X             (a stopped guest VM: exit 1 when an acknowledged write is lost)
 *   npx tsx lab/cli.ts chain   --vm-id X
 *   npx tsx lab/cli.ts stop    --vm-id X
 *   npx tsx lab/cli.ts start   --vm-id X [--active DISK=VOLUME ...]   (paused, no guest OS)
 *   npx tsx lab/cli.ts destroy --vm-id X
 *
 * Every command takes --run-dir DIR (default ./.lab/run) and --json. Exit status: 0 done,
 * 1 failed (or verify found a problem), 2 bad usage.
 */
import { volumeIdOf } from '../src/domain/layout';
import { describeGuestReport, describeReport, describeVm } from './cli/describe';
import { parse, USAGE, UsageError } from './cli/flags';
import { checkGuestWrites } from './guest';
import {
  activeVolumePath,
  createLabVm,
  destroyLabVm,
  readHeaderChain,
  readLabVm,
  startLabVm,
  stopLabVm,
  verifyLabVm,
} from './vm';

async function main(argv: string[]): Promise<number> {
  const { command, flags } = parse(argv);
  const vmId = flags['vm-id'];
  const runDir = flags['run-dir'];
  const print = (json: unknown, human: string): void => {
    process.stdout.write(`${flags.json ? JSON.stringify(json, null, 2) : human}\n`);
  };
  switch (command) {
    case 'create': {
      const vm = await createLabVm({
        vmId,
        runDir,
        storageRoot: flags['storage-root'],
        disks: flags.disks,
        volumes: flags.volumes,
        sizeMiB: flags['size-mib'],
        layerDataMiB: flags['layer-data-mib'],
        guest: flags.paused
          ? false
          : {
              ...(flags['guest-rate'] === undefined ? {} : { rate: flags['guest-rate'] }),
              ...(flags['guest-region-mib'] === undefined ? {} : { regionMiB: flags['guest-region-mib'] }),
            },
      });
      print(vm, `created ${describeVm(vm)}`);
      return 0;
    }
    case 'verify': {
      const report = await verifyLabVm(runDir, vmId, { flush: flags.flush });
      print(report, describeReport(report));
      return report.ok ? 0 : 1;
    }
    case 'check': {
      const report = await checkGuestWrites(runDir, vmId);
      print(report, describeGuestReport(report));
      return report.ok ? 0 : 1;
    }
    case 'chain': {
      const vm = await readLabVm(runDir, vmId);
      const disks = [];
      for (const d of vm.disks) {
        const activePath = await activeVolumePath(runDir, vmId, d.deviceId);
        const paths = await readHeaderChain(activePath);
        disks.push({
          diskId: d.diskId,
          activePath,
          chain: paths.map((p) => volumeIdOf(vm.storageRoot, d.diskId, p) ?? p),
          paths,
        });
      }
      print(
        { vmId, disks },
        disks.map((d) => `${d.diskId}: ${d.chain.join(' → ')}   (active: ${d.activePath})`).join('\n'),
      );
      return 0;
    }
    case 'stop': {
      const how = await stopLabVm(runDir, vmId);
      const said = { 'not-running': 'was not running', 'guest-powered-off': 'its guest powered off', killed: 'killed' };
      print({ vmId, stopped: true, how }, `stopped lab VM ${vmId} (${said[how]})`);
      return 0;
    }
    case 'start': {
      const { vm, chains } = await startLabVm(runDir, vmId, { activeVolumes: flags.active ?? {} });
      print(
        { vmId, pid: vm.pid, chains },
        [
          `started lab VM ${vmId} (pid ${vm.pid}, paused, no guest OS)`,
          ...Object.entries(chains).map(([diskId, ids]) => `  ${diskId}: ${[...ids].reverse().join(' → ')}`),
        ].join('\n'),
      );
      return 0;
    }
    case 'destroy':
      await destroyLabVm(runDir, vmId);
      print({ vmId, destroyed: true }, `destroyed lab VM ${vmId}`);
      return 0;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`lab: ${err.message}\n\n${USAGE}`);
      process.exit(2);
    }
    process.stderr.write(`lab: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
