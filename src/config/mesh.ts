// MeshConfig: from `--mesh-config <file>` and/or a ConfigMap named `istio` (key `mesh`), as istiod
// reads it. Only the fields Gatehouse uses are kept; the rest of a real mesh config is ignored.
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { DEFAULT_MESH_CONFIG, type MeshConfig, type Problem, type Resource } from './types.js';
import { meshConfigProblems } from './validate.js';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Overlays the fields of a parsed MeshConfig object onto `base`, reporting bad values. */
export function applyMeshObject(base: MeshConfig, obj: unknown, where: (field: string) => Omit<Problem, 'message' | 'path'>): { mesh: MeshConfig; problems: Problem[] } {
  const problems: Problem[] = [];
  const mesh: MeshConfig = structuredClone(base);
  if (obj === null || obj === undefined) return { mesh, problems };
  const fail = (field: string, message: string): void => {
    problems.push({ ...where(field), path: field, message });
  };
  if (!isObject(obj)) {
    fail('', 'mesh config must be a mapping');
    return { mesh, problems };
  }
  if (obj.rootNamespace !== undefined) {
    if (typeof obj.rootNamespace === 'string' && obj.rootNamespace) mesh.rootNamespace = obj.rootNamespace;
    else fail('rootNamespace', 'must be a namespace name');
  }
  if (obj.trustDomain !== undefined) {
    if (typeof obj.trustDomain === 'string' && obj.trustDomain) mesh.trustDomain = obj.trustDomain;
    else fail('trustDomain', 'must be a string');
  }
  if (obj.outboundTrafficPolicy !== undefined) {
    const mode = isObject(obj.outboundTrafficPolicy) ? obj.outboundTrafficPolicy.mode : undefined;
    if (mode === 'ALLOW_ANY' || mode === 'REGISTRY_ONLY') mesh.outboundTrafficPolicy = { mode };
    else fail('outboundTrafficPolicy.mode', 'must be one of ALLOW_ANY, REGISTRY_ONLY');
  }
  if (obj.accessLogFile !== undefined) {
    if (typeof obj.accessLogFile === 'string') mesh.accessLogFile = obj.accessLogFile;
    else fail('accessLogFile', 'must be a path such as /dev/stdout');
  }
  if (obj.accessLogEncoding !== undefined) {
    if (obj.accessLogEncoding === 'TEXT' || obj.accessLogEncoding === 'JSON') mesh.accessLogEncoding = obj.accessLogEncoding;
    else fail('accessLogEncoding', 'must be one of TEXT, JSON');
  }
  if (obj.accessLogFormat !== undefined) {
    if (typeof obj.accessLogFormat === 'string') mesh.accessLogFormat = obj.accessLogFormat;
    else fail('accessLogFormat', 'must be a string');
  }
  if (obj.defaultConfig !== undefined) {
    if (isObject(obj.defaultConfig)) mesh.defaultConfig = obj.defaultConfig as MeshConfig['defaultConfig'];
    else fail('defaultConfig', 'must be a mapping');
  }
  if (obj.extensionProviders !== undefined) {
    if (Array.isArray(obj.extensionProviders)) mesh.extensionProviders = obj.extensionProviders;
    else fail('extensionProviders', 'must be a list');
  }
  if (obj.defaultProviders !== undefined) {
    const dp = obj.defaultProviders;
    const names = (v: unknown): v is string[] => v === undefined || (Array.isArray(v) && v.every((x) => typeof x === 'string'));
    if (isObject(dp) && names(dp.tracing) && names(dp.metrics) && names(dp.accessLogging)) {
      mesh.defaultProviders = {
        ...(dp.tracing ? { tracing: dp.tracing as string[] } : {}),
        ...(dp.metrics ? { metrics: dp.metrics as string[] } : {}),
        ...(dp.accessLogging ? { accessLogging: dp.accessLogging as string[] } : {}),
      };
    } else fail('defaultProviders', 'must be a mapping of tracing, metrics, accessLogging to lists of provider names');
  }
  if (obj.enableTracing !== undefined) {
    if (typeof obj.enableTracing === 'boolean') mesh.enableTracing = obj.enableTracing;
    else fail('enableTracing', 'must be true or false');
  }
  return { mesh, problems };
}

export function loadMeshConfigFile(file: string): { mesh: MeshConfig; problems: Problem[] } {
  const at = (): Omit<Problem, 'message' | 'path'> => ({ file, line: 1, resource: '', severity: 'error' });
  let obj: unknown;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
    obj = parse(text);
  } catch (e) {
    return { mesh: DEFAULT_MESH_CONFIG, problems: [{ ...at(), path: '', message: `cannot read mesh config: ${(e as Error).message}` }] };
  }
  const r = applyMeshObject(DEFAULT_MESH_CONFIG, obj, at);
  // The schema's problems carry their own lines; a field applyMeshObject also refused is said once.
  const checked = meshConfigProblems(text, { file, resource: '', prefix: [], keyLine: 0, block: true });
  const said = new Set(checked.filter((p) => p.severity === 'error').map((p) => p.path));
  return { mesh: r.mesh, problems: [...checked, ...r.problems.filter((p) => !said.has(p.path))] };
}

/** The mesh config from a ConfigMap `istio` among the resources, overlaid on `base`. */
export function meshFromResources(base: MeshConfig, resources: readonly Resource[]): { mesh: MeshConfig; problems: Problem[] } {
  const cms = resources.filter((r) => r.kind === 'ConfigMap' && r.metadata.name === 'istio');
  // Prefer the one in the root namespace when there are several, as istiod reads its own namespace.
  const cm = cms.find((r) => r.metadata.namespace === base.rootNamespace) ?? cms[0];
  if (!cm) return { mesh: base, problems: [] };
  const data = (cm.spec as { data?: Record<string, unknown> }).data;
  const text = data?.mesh;
  if (text === undefined) return { mesh: base, problems: [] };
  const at = (): Omit<Problem, 'message' | 'path'> => ({ file: cm.source.file, line: cm.source.lineOf(['data', 'mesh']), resource: `ConfigMap/${cm.metadata.namespace}/istio`, severity: 'error' });
  if (typeof text !== 'string') return { mesh: base, problems: [{ ...at(), path: 'data.mesh', message: 'must be a string holding MeshConfig YAML' }] };
  let obj: unknown;
  try {
    obj = parse(text);
  } catch (e) {
    return { mesh: base, problems: [{ ...at(), path: 'data.mesh', message: `invalid YAML: ${(e as Error).message.split('\n')[0]}` }] };
  }
  const r = applyMeshObject(base, obj, at);
  for (const p of r.problems) p.path = p.path ? `data.mesh.${p.path}` : 'data.mesh';
  return r;
}
