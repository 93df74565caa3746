/** The one hypervisor host of the test stacks (in-process and process-per-component). */
export const HOST_ID = 'host1';
