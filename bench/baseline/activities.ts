/** The baseline's host activities: each returns at once. */
export const noopActivities = {
  async noopMerge(diskId: string): Promise<string> {
    return diskId;
  },
  async noopWait(diskId: string): Promise<string> {
    return diskId;
  },
  async noopVerify(diskId: string): Promise<string> {
    return diskId;
  },
  async noopDelete(diskId: string): Promise<string> {
    return diskId;
  },
  async noopCleanup(diskId: string): Promise<string> {
    return diskId;
  },
};
export type NoopActivities = typeof noopActivities;
