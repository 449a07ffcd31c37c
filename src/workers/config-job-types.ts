// What a configuration job takes and gives back (config-job.ts runs it; kube-job.ts runs it with
// `--kubernetes`): plain, structured-cloneable data that crosses to and from the configuration
// thread. Below both runners, so that neither imports the other for a type.
import type { MeshConfig, ObjectMeta, Problem } from '../config/types.js';
import type { Snapshot } from '../controlplane/snapshot.js';
import type { StageTimes } from '../telemetry/stages.js';

export interface ConfigJob {
  paths: string[];
  meshConfigFile?: string | undefined;
  namespace: string;
  labels: Record<string, string>;
  bind: string;
  /** The content hashes now serving: an identical result is reported, not returned. */
  configHash: string | null;
  snapshotHash: string | null;
  /** `--kubernetes`: the files plus the objects of the Kubernetes source hosted where the job runs. */
  kubernetes?: boolean;
  /** `--cluster-domain` (with `--kubernetes`): Services are `<name>.<ns>.svc.<domain>`; default cluster.local. */
  clusterDomain?: string;
  /** Build the sidecar views (only an xDS server serves them); default true. */
  sidecarViews?: boolean;
}

export type ConfigJobResult =
  /** Invalid: the problems (errors among them). */
  | { kind: 'invalid'; problems: Problem[] }
  /** The files' content is what is serving. */
  | { kind: 'unchanged'; problems: Problem[]; kube?: KubeJobInfo }
  /** New content, but it resolves to the snapshot serving. */
  | { kind: 'same-snapshot'; problems: Problem[]; configHash: string; mesh: MeshConfig; kube?: KubeJobInfo }
  | { kind: 'snapshot'; problems: Problem[]; configHash: string; mesh: MeshConfig; snapshot: Snapshot; kube?: KubeJobInfo; stages?: StageTimes }
  /** `--kubernetes`: the source has not received the first full list of every kind yet. */
  | { kind: 'waiting'; problems: Problem[] };

/** What the main thread needs of an accepted API object (to resolve for other labels, report Gateways). */
export interface PlainResource {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec: unknown;
  resourceVersion: string;
}

export interface KubeRejection {
  kind: string;
  id: string;
  /** `Kind/ns/name: path: message`, one per problem. */
  lines: string[];
  /** Its last good version keeps serving (else it is left out). */
  kept: boolean;
}

export interface KubeJobInfo {
  /** Object versions refused for the first time. */
  rejections: KubeRejection[];
  /** A `--config` change refused while the last good files keep serving: its problems. */
  filesRejected: Problem[];
  /** The accepted API objects, as a change to the main thread's copy (it resolves for replicas with other labels). */
  mirror: { reset: boolean; upserts: PlainResource[]; deletes: string[] };
  objects: number;
}
