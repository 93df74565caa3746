import { chooseDriver } from '../../src/drivers/choose';
import { LibvirtDriver } from '../../src/drivers/libvirt/libvirt-driver';
import { QmpDriver } from '../../src/drivers/qmp/qmp-driver';

/** The one place a host agent's driver is picked (worker.ts, workers/host.ts and the fault agent use it). */
test('QEMU over QMP unless libvirt is asked for', async () => {
  const drivers = [
    chooseDriver({ runDir: '/run/lm' }),
    chooseDriver({ runDir: '/run/lm', driver: 'qmp', libvirtUri: 'qemu:///system' }),
    chooseDriver({ runDir: '/run/lm', driver: 'libvirt', libvirtUri: 'qemu:///session' }),
  ];
  try {
    expect(drivers.map((d) => d.constructor)).toEqual([QmpDriver, QmpDriver, LibvirtDriver]);
  } finally {
    await Promise.all(drivers.map((d) => d.close()));
  }
});
