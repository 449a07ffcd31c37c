// A configuration job with `--kubernetes`: the `--config` files (all-or-nothing, as without
// Kubernetes) plus the objects the Kubernetes source holds, accepted one by one
// (src/config/kubernetes/accept.ts), validated, translated. Runs where the source lives: on the
// configuration thread, or inline on the main thread when no such thread can start. Keeps, between
// jobs, what the serving configuration was built from (each object's last good version, the last
// good files) and what was already reported, so that a problem is logged and counted once.
import { createHash } from 'node:crypto';
import { analyze } from '../config/analyze.js';
import { acceptObjects, credentialCulprits, referencedSecrets, type AcceptResult } from '../config/kubernetes/accept.js';
import type { StoredObject } from '../config/kubernetes/objects.js';
import { validationMessages, type ValidationMessage } from '../config/kubernetes/status.js';
import { loadPaths } from '../config/load.js';
import { loadMeshConfigFile, meshFromResources } from '../config/mesh.js';
import { sortProblems } from '../config/pipeline.js';
import { DEFAULT_MESH_CONFIG, formatProblem, resourceId, type MeshConfig, type Problem, type Resource } from '../config/types.js';
import { validate } from '../config/validate.js';
import { resolve, resolveEndpoints } from '../controlplane/resolve.js';
import type { Snapshot } from '../controlplane/snapshot.js';
import { Stages } from '../telemetry/stages.js';
import { checkCertificates } from '../tls/check.js';
import type { ConfigJob, ConfigJobResult, KubeJobInfo, KubeRejection, PlainResource } from './config-job-types.js';

export type { KubeJobInfo, KubeRejection, PlainResource } from './config-job-types.js';

/** Where the objects come from: the Kubernetes source, or a test's stand-in. */
export interface ObjectSource {
  readonly synced: boolean;
  objects(): StoredObject[];
  /** `--write-status`: takes the validation messages each object should carry. */
  readonly writeStatus?: ((desired: ReadonlyArray<{ object: StoredObject; messages: ValidationMessage[] }>) => void) | undefined;
}

export class KubeJobState {
  readonly source: ObjectSource;
  lastGood = new Map<string, StoredObject>();
  lastGoodFiles: Resource[] | null = null;
  /** Warning lines reported by the last job (each is logged when it first appears). */
  #reported = new Set<string>();
  /** Rejected versions already reported: id → fingerprint. */
  #rejected = new Map<string, string>();
  /** What the main thread's copy holds: id → fingerprint. */
  #mirror: Map<string, string> | null = null;
  /** Each object's own problems, checked once per version (see validate()). */
  readonly ownProblems = new WeakMap<Resource, Problem[]>();
  /** The last translation's warnings (for `--write-status` when a job does not translate). */
  translationWarnings: readonly Problem[] = [];
  /** The last translation and what it was made of (for a change of endpoints only). */
  translated: { snapshot: Snapshot; accepted: ReadonlyMap<string, StoredObject>; files: string; opts: string } | null = null;

  constructor(source: ObjectSource) {
    this.source = source;
  }

  /** Warnings not reported by the previous job. */
  newWarnings(problems: readonly Problem[]): Problem[] {
    const now = new Set<string>();
    const out: Problem[] = [];
    for (const p of problems) {
      if (p.severity !== 'warning') continue;
      const line = formatProblem(p);
      now.add(line);
      if (!this.#reported.has(line)) out.push(p);
    }
    this.#reported = now;
    return out;
  }

  /** Rejections not reported before; forgets those whose object was since accepted or removed. */
  newRejections(a: AcceptResult): KubeRejection[] {
    const out: KubeRejection[] = [];
    const still = new Set<string>();
    for (const r of a.rejected) {
      still.add(r.object.id);
      if (this.#rejected.get(r.object.id) === r.object.fingerprint) continue;
      this.#rejected.set(r.object.id, r.object.fingerprint);
      out.push({ kind: r.object.kind, id: r.object.id, lines: r.problems.map(formatProblem), kept: r.kept !== null });
    }
    for (const id of [...this.#rejected.keys()]) if (!still.has(id)) this.#rejected.delete(id);
    return out;
  }

  mirrorDelta(accepted: ReadonlyMap<string, StoredObject>): KubeJobInfo['mirror'] {
    const reset = this.#mirror === null;
    const before = this.#mirror ?? new Map<string, string>();
    const next = new Map<string, string>();
    const upserts: PlainResource[] = [];
    for (const [id, o] of accepted) {
      next.set(id, o.fingerprint);
      if (before.get(id) !== o.fingerprint) upserts.push({ apiVersion: o.apiVersion, kind: o.kind, metadata: o.metadata, spec: o.body, resourceVersion: o.resourceVersion });
    }
    const deletes = [...before.keys()].filter((id) => !next.has(id));
    this.#mirror = next;
    return { reset, upserts, deletes };
  }
}

/** `--write-status`: each current Istio object's messages - its refusal's errors, the warnings about what serves. */
function desiredStatuses(all: readonly StoredObject[], a: AcceptResult, warnings: readonly Problem[]): Array<{ object: StoredObject; messages: ValidationMessage[] }> {
  const byId = new Map<string, Problem[]>();
  const add = (id: string, p: Problem): void => {
    let list = byId.get(id);
    if (!list) byId.set(id, (list = []));
    list.push(p);
  };
  for (const r of a.rejected) for (const p of r.problems) add(r.object.id, p);
  for (const p of warnings) if (p.file === '' && p.severity === 'warning') add(p.resource, p);
  return all.filter((o) => !NO_STATUS_KINDS.has(o.kind)).map((object) => ({ object, messages: validationMessages(byId.get(object.id) ?? []) }));
}

/** Kubernetes kinds, which carry no Istio status (what Gatehouse cannot use of them is logged). */
const NO_STATUS_KINDS = new Set(['Service', 'EndpointSlice', 'Pod', 'Secret', 'ConfigMap']);

/** The content hash: the files' resources as the file pipeline hashes them, API objects by their fingerprints. */
function hashOf(mesh: MeshConfig, files: readonly Resource[], objects: ReadonlyMap<string, StoredObject>): string {
  const byId = (a: Resource, b: Resource): number => (resourceId(a) < resourceId(b) ? -1 : resourceId(a) > resourceId(b) ? 1 : 0);
  const h = createHash('sha256').update(JSON.stringify({ mesh, files: [...files].sort(byId).map((r) => [r.apiVersion, r.kind, r.metadata, r.spec, r.source.file]) }));
  for (const id of [...objects.keys()].sort()) h.update(`\n${id} ${objects.get(id)!.fingerprint}`);
  return h.digest('hex').slice(0, 16);
}

/** Kinds whose changes only change endpoints (the registry's endpoints and their labels). */
const ENDPOINT_KINDS: ReadonlySet<string> = new Set(['EndpointSlice', 'Pod']);

/** Whether what changed from one accepted set to the next is only EndpointSlices and Pods. */
function endpointsOnly(before: ReadonlyMap<string, StoredObject>, after: ReadonlyMap<string, StoredObject>): boolean {
  for (const [id, o] of after) if (before.get(id)?.fingerprint !== o.fingerprint && !ENDPOINT_KINDS.has(o.kind)) return false;
  for (const [id, o] of before) if (!after.has(id) && !ENDPOINT_KINDS.has(o.kind)) return false;
  return true;
}

/** The content of the `--config` files, to tell whether they changed. */
function filesKey(files: readonly Resource[]): string {
  return JSON.stringify(files.map((r) => [r.apiVersion, r.kind, r.metadata, r.spec, r.source.file]));
}

const domainOf = (job: ConfigJob): { clusterDomain?: string } => (job.clusterDomain ? { clusterDomain: job.clusterDomain } : {});
const viewsOf = (job: ConfigJob): { sidecarViews?: boolean } => (job.sidecarViews === false ? { sidecarViews: false } : {});

export function runKubeJob(job: ConfigJob, state: KubeJobState): ConfigJobResult {
  if (!state.source.synced) return { kind: 'waiting', problems: [] };
  const stages = new Stages();
  // The mesh config file, then the files: their problems (syntax, I/O) make the files invalid.
  let base = DEFAULT_MESH_CONFIG;
  const fileProblems: Problem[] = [];
  if (job.meshConfigFile) {
    const m = loadMeshConfigFile(job.meshConfigFile);
    base = m.mesh;
    fileProblems.push(...m.problems);
  }
  const loaded = loadPaths(job.paths);
  fileProblems.push(...loaded.problems);

  const all = state.source.objects();
  stages.mark('read');
  const culprits = credentialCulprits(job.namespace);
  const check = (set: readonly Resource[]): Problem[] => {
    const mesh = meshFromResources(base, set).mesh;
    const opts = { gatewayNamespace: job.namespace, labels: { ...job.labels }, rootNamespace: mesh.rootNamespace, ownProblems: state.ownProblems, ...domainOf(job) };
    const v = validate(set, opts);
    return [...v.problems, ...checkCertificates(v.checkable, { namespace: job.namespace, labels: job.labels })];
  };
  const attempt = (files: readonly Resource[]): AcceptResult => {
    // Secrets take part only when the configuration names them (credentialName).
    const wanted = referencedSecrets([...files, ...all.filter((o) => o.kind === 'Gateway' || o.kind === 'DestinationRule').map((o) => ({ kind: o.kind, spec: o.body }) as Resource)]);
    const objects = all.filter((o) => o.kind !== 'Secret' || wanted.has(o.metadata.name));
    return acceptObjects({ files, objects, lastGood: state.lastGood, check, culprits });
  };

  let accepted = attempt(loaded.resources);
  const fileErrors = [...fileProblems, ...accepted.problems].filter((p) => p.severity === 'error');
  let filesRejected: Problem[] = [];
  let files = loaded.resources;
  if (fileErrors.length > 0) {
    if (!state.lastGoodFiles) return { kind: 'invalid', problems: sortProblems([...fileProblems, ...accepted.problems]) };
    // The file change is refused; the last good files keep serving beside the API objects.
    filesRejected = sortProblems([...fileProblems, ...accepted.problems.filter((p) => p.file !== '')]);
    files = state.lastGoodFiles;
    accepted = attempt(files);
    if (accepted.problems.some((p) => p.severity === 'error')) return { kind: 'invalid', problems: sortProblems([...fileProblems, ...accepted.problems]) };
  }

  stages.mark('validate');
  const set = accepted.resources;
  const mesh = meshFromResources(base, set).mesh;
  const warnings = [...accepted.problems, ...analyze(set, { labels: job.labels, gatewayNamespace: job.namespace, rootNamespace: mesh.rootNamespace, ...domainOf(job) })];
  stages.mark('analyze');
  const hash = hashOf(mesh, files, accepted.accepted);
  stages.mark('hash');
  const rejections = state.newRejections(accepted);
  state.lastGood = accepted.accepted;
  state.lastGoodFiles = files;
  const kube = (): KubeJobInfo => ({ rejections, filesRejected, mirror: state.mirrorDelta(accepted.accepted), objects: accepted.accepted.size });
  // Unchanged: its warnings are those already reported.
  if (hash === job.configHash) {
    state.source.writeStatus?.(desiredStatuses(all, accepted, [...warnings, ...state.translationWarnings]));
    return { kind: 'unchanged', problems: [], kube: kube() };
  }
  const opts = { labels: job.labels, namespace: job.namespace, bind: job.bind, mesh, ...domainOf(job), ...viewsOf(job) };
  // Only EndpointSlices and Pods changed since the last translation: only endpoints change (istiod
  // pushes EDS alone then), the rest of the last snapshot is kept as it is.
  const basis = { accepted: accepted.accepted, files: filesKey(files), opts: JSON.stringify(opts) };
  const last = state.translated;
  const sameElse = last !== null && last.files === basis.files && last.opts === basis.opts && endpointsOnly(last.accepted, basis.accepted);
  const snapshot = (sameElse ? resolveEndpoints(last.snapshot, set, opts) : undefined) ?? resolve(set, opts, last?.snapshot);
  stages.mark(snapshot.endpoints !== last?.snapshot.endpoints && sameElse && snapshot.routes === last.snapshot.routes ? 'resolve-endpoints' : 'resolve');
  state.translated = { ...basis, snapshot };
  state.translationWarnings = snapshot.warnings;
  state.source.writeStatus?.(desiredStatuses(all, accepted, [...warnings, ...snapshot.warnings]));
  const problems = state.newWarnings(sortProblems([...warnings, ...snapshot.warnings]));
  if (snapshot.hash === job.snapshotHash) return { kind: 'same-snapshot', problems, configHash: hash, mesh, kube: kube() };
  const info = kube();
  stages.mark('status');
  return { kind: 'snapshot', problems, configHash: hash, mesh, snapshot, kube: info, stages: stages.times };
}
