// One configuration reload's heavy part: read the files, validate, check certificates, resolve.
// Pure and synchronous; run on a worker thread (config-worker.ts) so that a large configuration
// does not stall the thread serving requests, or inline when no worker is available. Everything
// it returns is structured-cloneable (the parsed resources, which carry line-lookup closures,
// stay behind).
import { loadConfig, sortProblems, type PipelineResult } from '../config/pipeline.js';
import { resolve } from '../controlplane/resolve.js';
import type { Snapshot } from '../controlplane/snapshot.js';
import { checkCertificates } from '../tls/check.js';
import type { ConfigJob, ConfigJobResult } from './config-job-types.js';
import { runKubeJob, type KubeJobState } from './kube-job.js';

export type { ConfigJob, ConfigJobResult } from './config-job-types.js';

/** The Kubernetes source's job state where this thread hosts it (kube-host.ts). */
let kubeState: KubeJobState | null = null;
/** The last snapshot resolved from files here (its unchanged parts are shared by the next). */
let lastFileSnapshot: Snapshot | null = null;

export function setKubeJobState(state: KubeJobState | null): void {
  kubeState = state;
}

export interface CheckOptions {
  paths: readonly string[];
  meshConfigFile?: string | undefined;
  namespace: string;
  /** The labels in force (`--labels`, else the default). */
  labels: Record<string, string>;
  /** `validate` without --labels: every Gateway's certificates and translation, whatever its selector. */
  allGateways?: boolean;
  /**
   * Also translate a valid configuration for its warnings (`validate`). `run` translates a valid
   * one itself (and logs the warnings then); an invalid one is always translated here, so that its
   * translation warnings are reported with its errors.
   */
  translationWarnings?: boolean;
}

/**
 * Every check a configuration gets, each over what it can check whatever the others found: the
 * config pipeline (syntax, schema, references, analyzer), the certificate checks (files and
 * Secrets must load and match) and the translation's warnings, sorted by file and line.
 */
export function loadCheckedConfig(o: CheckOptions): PipelineResult {
  const result = loadConfig({ paths: o.paths, meshConfigFile: o.meshConfigFile, gatewayNamespace: o.namespace, labels: o.labels, ...(o.allGateways ? { allGateways: true } : {}) });
  const { resources, mesh } = result.checkable;
  const problems = [...result.problems, ...checkCertificates(resources, { namespace: o.namespace, labels: o.labels, ...(o.allGateways ? { allGateways: true } : {}) })];
  const invalid = problems.some((p) => p.severity === 'error');
  if (invalid || o.translationWarnings) {
    try {
      const s = resolve(resources, { labels: o.labels, namespace: o.namespace, bind: '0.0.0.0', mesh, ...(o.allGateways ? { allGateways: true } : {}) });
      problems.push(...s.warnings);
    } catch (err) {
      // Resources that are valid each on their own may still not translate together; the errors
      // already found are what the user must fix first.
      if (!invalid) throw err;
    }
  }
  const sorted = sortProblems(problems);
  if (invalid) return { problems: sorted, checkable: result.checkable };
  return { ...result, problems: sorted };
}

export function runConfigJob(job: ConfigJob): ConfigJobResult {
  if (job.kubernetes) return kubeState ? runKubeJob(job, kubeState) : { kind: 'waiting', problems: [] };
  const result = loadCheckedConfig(job);
  if (!result.config) return { kind: 'invalid', problems: result.problems };
  const c = result.config;
  if (c.hash === job.configHash) return { kind: 'unchanged', problems: result.problems };
  // What is unchanged since the last snapshot keeps its objects (resolve()): consumers skip it.
  const snapshot = resolve(c.resources, { labels: job.labels, namespace: job.namespace, bind: job.bind, mesh: c.mesh, ...(job.sidecarViews === false ? { sidecarViews: false } : {}) }, lastFileSnapshot ?? undefined);
  lastFileSnapshot = snapshot;
  if (snapshot.hash === job.snapshotHash) return { kind: 'same-snapshot', problems: result.problems, configHash: c.hash, mesh: c.mesh };
  return { kind: 'snapshot', problems: result.problems, configHash: c.hash, mesh: c.mesh, snapshot };
}
