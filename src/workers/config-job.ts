// One configuration reload's heavy part: read the files, validate, check certificates, resolve.
// Pure and synchronous; run on a worker thread (config-worker.ts) so that a large configuration
// does not stall the thread serving requests, or inline when no worker is available. Everything
// it returns is structured-cloneable (the parsed resources, which carry line-lookup closures,
// stay behind).
import { loadConfig, type PipelineResult } from '../config/pipeline.js';
import type { MeshConfig, Problem } from '../config/types.js';
import { resolve } from '../controlplane/resolve.js';
import type { Snapshot } from '../controlplane/snapshot.js';
import { checkCertificates } from '../tls/check.js';

export interface ConfigJob {
  paths: string[];
  meshConfigFile?: string | undefined;
  namespace: string;
  labels: Record<string, string>;
  bind: string;
  /** The content hashes now serving: an identical result is reported, not returned. */
  configHash: string | null;
  snapshotHash: string | null;
}

export type ConfigJobResult =
  /** Invalid: the problems (errors among them). */
  | { kind: 'invalid'; problems: Problem[] }
  /** The files' content is what is serving. */
  | { kind: 'unchanged'; problems: Problem[] }
  /** New content, but it resolves to the snapshot serving. */
  | { kind: 'same-snapshot'; problems: Problem[]; configHash: string; mesh: MeshConfig }
  | { kind: 'snapshot'; problems: Problem[]; configHash: string; mesh: MeshConfig; snapshot: Snapshot };

/** The config pipeline plus the certificate checks (files and Secrets must load and match). */
export function loadCheckedConfig(o: { paths: string[]; meshConfigFile?: string | undefined; namespace: string; labels: Record<string, string> }): PipelineResult {
  const result = loadConfig({ paths: o.paths, meshConfigFile: o.meshConfigFile, gatewayNamespace: o.namespace, labels: o.labels });
  if (!result.config) return result;
  const certProblems = checkCertificates(result.config.resources, { namespace: o.namespace, labels: o.labels });
  if (certProblems.length === 0) return result;
  return { problems: [...result.problems, ...certProblems] };
}

export function runConfigJob(job: ConfigJob): ConfigJobResult {
  const result = loadCheckedConfig(job);
  if (!result.config) return { kind: 'invalid', problems: result.problems };
  const c = result.config;
  if (c.hash === job.configHash) return { kind: 'unchanged', problems: result.problems };
  const snapshot = resolve(c.resources, { labels: job.labels, namespace: job.namespace, bind: job.bind, mesh: c.mesh });
  if (snapshot.hash === job.snapshotHash) return { kind: 'same-snapshot', problems: result.problems, configHash: c.hash, mesh: c.mesh };
  return { kind: 'snapshot', problems: result.problems, configHash: c.hash, mesh: c.mesh, snapshot };
}
