import { DEFAULT_LIBVIRT_URI, type HostDriverKind } from '../config/worker-config';
import type { HypervisorDriver } from './driver';
import { LibvirtDriver } from './libvirt/libvirt-driver';
import { QmpDriver } from './qmp/qmp-driver';

export interface DriverChoice {
  /** Where the VMs' QMP sockets and the agent's job records live. */
  runDir: string;
  /** QEMU's QMP sockets under the run dir (the default), or libvirt. */
  driver?: HostDriverKind;
  /** The libvirt connection of `driver: libvirt`. */
  libvirtUri?: string;
}

/** The hypervisor driver a host agent runs: the one place that picks one. */
export function chooseDriver(choice: DriverChoice): HypervisorDriver {
  return choice.driver === 'libvirt'
    ? new LibvirtDriver({ uri: choice.libvirtUri ?? DEFAULT_LIBVIRT_URI, runDir: choice.runDir })
    : new QmpDriver(choice.runDir);
}
