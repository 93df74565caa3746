/** What QEMU needs to let go of a volume: each node still holding it detached, format node first. */
export interface NodeGraph {
  nodesHolding(vmId: string, path: string): Promise<string[]>;
  deleteNode(vmId: string, nodeName: string): Promise<void>;
}

export async function releaseNodes(graph: NodeGraph, vmId: string, path: string): Promise<void> {
  for (const node of await graph.nodesHolding(vmId, path)) await graph.deleteNode(vmId, node);
}
