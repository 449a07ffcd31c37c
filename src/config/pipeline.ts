// Config sources → a validated, hashed ConfigSet, or the problems that keep it from being used.
import { createHash } from 'node:crypto';
import { loadPaths } from './load.js';
import { loadMeshConfigFile, meshFromResources } from './mesh.js';
import { DEFAULT_MESH_CONFIG, resourceId, type ConfigSet, type Problem } from './types.js';
import { validate } from './validate.js';

export interface PipelineOptions {
  paths: readonly string[];
  meshConfigFile?: string | undefined;
  /** `--namespace` */
  gatewayNamespace: string;
  /** `--labels` */
  labels: Readonly<Record<string, string>>;
}

export interface PipelineResult {
  /** Present when there is no error (warnings allowed). */
  config?: ConfigSet;
  problems: Problem[];
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
  const v = validate(loaded.resources, { gatewayNamespace: opts.gatewayNamespace, labels: { ...opts.labels }, rootNamespace: mesh.rootNamespace });
  problems.push(...v.problems);
  problems.sort((a, b) => (a.file === b.file ? a.line - b.line : a.file < b.file ? -1 : 1));
  if (problems.some((p) => p.severity === 'error')) return { problems };
  const resources = [...v.accepted].sort((a, b) => (resourceId(a) < resourceId(b) ? -1 : resourceId(a) > resourceId(b) ? 1 : 0));
  const hash = createHash('sha256')
    .update(JSON.stringify({ mesh, resources: resources.map((r) => [r.apiVersion, r.kind, r.metadata, r.spec, r.source.file]) }))
    .digest('hex')
    .slice(0, 16);
  // Config order matters for Istio semantics (VirtualService merge order), so keep file order.
  return { config: { resources: v.accepted, mesh, hash }, problems };
}
