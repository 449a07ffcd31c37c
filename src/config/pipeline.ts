// Config sources → a validated, hashed ConfigSet, or the problems that keep it from being used.
// Every stage here runs over what it can check, whatever the others found: an error in one
// resource never hides the problems of another (CONTRACT: "prints every problem").
import { createHash } from 'node:crypto';
import { analyze } from './analyze.js';
import { loadPaths } from './load.js';
import { loadMeshConfigFile, meshFromResources } from './mesh.js';
import { DEFAULT_MESH_CONFIG, formatProblem, resourceId, type ConfigSet, type MeshConfig, type Problem, type Resource } from './types.js';
import { validate } from './validate.js';

export interface PipelineOptions {
  paths: readonly string[];
  meshConfigFile?: string | undefined;
  /** `--namespace` */
  gatewayNamespace: string;
  /** The labels in force: `--labels`, else the default. */
  labels: Readonly<Record<string, string>>;
  /** `validate` without --labels: check the servers of every Gateway, whatever its selector. */
  allGateways?: boolean;
}

export interface PipelineResult {
  /** Present when there is no error (warnings allowed). */
  config?: ConfigSet;
  /** Sorted by file, then line. */
  problems: Problem[];
  /**
   * What the later stages (certificates, translation) can still check when there are errors:
   * the resources whose own structure is valid, and the mesh config.
   */
  checkable: { resources: Resource[]; mesh: MeshConfig };
}

/** By file, then line; stable otherwise (problems of one line keep the order they were found in). */
export function sortProblems(problems: readonly Problem[]): Problem[] {
  return problems
    .map((p, i) => ({ p, i }))
    .sort((a, b) => (a.p.file === b.p.file ? a.p.line - b.p.line || a.i - b.i : a.p.file < b.p.file ? -1 : 1))
    .map((x) => x.p);
}

export function loadConfig(opts: PipelineOptions): PipelineResult {
  const problems: Problem[] = [];
  let mesh = DEFAULT_MESH_CONFIG;
  if (opts.meshConfigFile) {
    const m = loadMeshConfigFile(opts.meshConfigFile);
    mesh = m.mesh;
    problems.push(...m.problems);
  }
  const loaded = loadPaths(opts.paths);
  problems.push(...loaded.problems);
  const fromCm = meshFromResources(mesh, loaded.resources);
  // Problems in the `istio` ConfigMap are reported by validate(), with lines inside `data.mesh`.
  mesh = fromCm.mesh;
  const v = validate(loaded.resources, {
    gatewayNamespace: opts.gatewayNamespace,
    labels: { ...opts.labels },
    rootNamespace: mesh.rootNamespace,
    ...(opts.allGateways ? { allGateways: true } : {}),
  });
  problems.push(...v.problems);
  problems.push(...analyze(v.checkable, { labels: opts.labels, gatewayNamespace: opts.gatewayNamespace, rootNamespace: mesh.rootNamespace }));
  const sorted = sortProblems(problems);
  const checkable = { resources: v.checkable, mesh };
  if (sorted.some((p) => p.severity === 'error')) return { problems: sorted, checkable };
  const resources = [...v.accepted].sort((a, b) => (resourceId(a) < resourceId(b) ? -1 : resourceId(a) > resourceId(b) ? 1 : 0));
  const hash = createHash('sha256')
    .update(JSON.stringify({ mesh, resources: resources.map((r) => [r.apiVersion, r.kind, r.metadata, r.spec, r.source.file]) }))
    .digest('hex')
    .slice(0, 16);
  // Config order matters for Istio semantics (VirtualService merge order), so keep file order.
  return { config: { resources: v.accepted, mesh, hash }, problems: sorted, checkable };
}

/** A problem as `validate` prints it: warnings say so after the field path. */
export function problemLine(p: Problem): string {
  return formatProblem(p.severity === 'warning' ? { ...p, message: `warning: ${p.message}` } : p);
}
