// Renders deploy/ with `kubectl kustomize` and checks every rendered object against the Kubernetes
// API schemas of the `kubernetes-models` package, in two ways:
// - the package's own validate() (compiled from Kubernetes' OpenAPI): types, formats, enums,
//   required fields. It does not reject unknown fields (the API server prunes or, with strict field
//   validation, refuses them), so
// - a strict check: each object, written as a TypeScript object literal typed with the package's
//   interface for its kind (`IDeployment`...), goes through tsc. Excess-property checks reject every
//   field the model does not declare, at any depth, and wrong types; each error is mapped back to
//   the field path.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const REPO_DIR = fileURLToPath(new URL('../../', import.meta.url));
export const DEPLOY_DIR = join(REPO_DIR, 'deploy');

/** A rendered Kubernetes object (only the envelope is typed; the rest is read by path). */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

/** Oldest kustomize known to render deploy/ (components, `labels`, inline transformers). */
const MIN_KUSTOMIZE = [5, 0, 0];

/**
 * Checks that `kubectl` is on the PATH with a kustomize new enough for deploy/, or throws saying
 * what to install. Returns kubectl's and kustomize's versions.
 */
export function requireKubectl(): { kubectl: string; kustomize: string } {
  const r = spawnSync('kubectl', ['version', '--client', '-o', 'json'], { encoding: 'utf8', timeout: 30_000 });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error(
      'kubectl is not installed: the deploy/ tests render the manifests with `kubectl kustomize`. ' +
        'Install kubectl 1.27 or newer (kustomize v5); .ci/run installs Debian\'s kubernetes-client where kubectl is missing.',
    );
  }
  if (r.status !== 0) throw new Error(`kubectl version --client failed (exit ${r.status}): ${r.stderr || r.error?.message}`);
  const v = JSON.parse(r.stdout) as { clientVersion?: { gitVersion?: string }; kustomizeVersion?: string };
  const kubectl = v.clientVersion?.gitVersion ?? 'unknown';
  const kustomize = v.kustomizeVersion ?? '';
  const parts = /^v(\d+)\.(\d+)\.(\d+)/.exec(kustomize)?.slice(1).map(Number);
  if (!parts || versionBelow(parts, MIN_KUSTOMIZE)) {
    throw new Error(
      `kubectl ${kubectl} bundles kustomize ${kustomize || '(v2, too old to report it)'}; deploy/ needs kustomize ` +
        `v${MIN_KUSTOMIZE.join('.')} or newer (kubectl 1.27+): components, the \`labels\` field and inline transformers. ` +
        'Debian 12\'s kubernetes-client is 1.20: install a newer kubectl.',
    );
  }
  return { kubectl, kustomize };
}

function versionBelow(v: readonly number[], min: readonly number[]): boolean {
  for (let i = 0; i < min.length; i++) if ((v[i] ?? 0) !== min[i]) return (v[i] ?? 0) < min[i]!;
  return false;
}

/** `kubectl kustomize <dir>` (a folder under the repository or an absolute path), parsed. */
export function kustomize(dir: string): KubeObject[] {
  const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed (exit ${r.status}): ${r.stderr}`);
  const objects: KubeObject[] = [];
  for (const doc of parseAllDocuments(r.stdout)) {
    if (doc.errors.length > 0) throw new Error(`kubectl kustomize ${dir}: unparsable output: ${doc.errors[0]!.message}`);
    const o = doc.toJS() as KubeObject | null;
    if (o) objects.push(o);
  }
  return objects;
}

/**
 * Renders `overlay` with `components` enabled, as a user's own kustomization would list them
 * (written to a temporary folder; kustomize only accepts relative paths to other kustomizations).
 */
export function kustomizeWith(overlay: string, components: readonly string[]): KubeObject[] {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-kustomize-'));
  try {
    const rel = (p: string): string => relative(dir, join(DEPLOY_DIR, p));
    const lines = [
      'apiVersion: kustomize.config.k8s.io/v1beta1',
      'kind: Kustomization',
      'resources:',
      `  - ${rel(overlay)}`,
      'components:',
      ...components.map((c) => `  - ${rel(c)}`),
    ];
    writeFileSync(join(dir, 'kustomization.yaml'), `${lines.join('\n')}\n`);
    return kustomize(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `kubernetes-models` module of a kind: `kubernetes-models/apps/v1/Deployment`, `.../v1/Service`. */
function modelModule(o: KubeObject): string {
  const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : ['', o.apiVersion];
  return `kubernetes-models/${group ? `${group}/` : ''}${version}/${o.kind}`;
}

export function objectName(o: KubeObject): string {
  return `${o.kind}/${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
}

/** Problems of the package's validate(): `Kind/ns/name: spec.ports[0].port: must be integer`. */
async function modelProblems(o: KubeObject, nameOf: (o: KubeObject) => string): Promise<string[]> {
  let Model: new (data: unknown) => { validate(): void };
  try {
    const mod = (await import(modelModule(o))) as Record<string, new (data: unknown) => { validate(): void }>;
    Model = mod[o.kind]!;
    if (!Model) throw new Error(`no export ${o.kind}`);
  } catch (e) {
    return [`${nameOf(o)}: no Kubernetes model for ${o.apiVersion} ${o.kind} (${(e as Error).message.split('\n')[0]})`];
  }
  try {
    new Model(o).validate();
    return [];
  } catch (e) {
    const errors = (e as { errors?: { instancePath: string; message?: string; params?: unknown }[] }).errors;
    if (!errors) return [`${nameOf(o)}: ${(e as Error).message}`];
    return errors.map((err) => `${nameOf(o)}: ${pointerToPath(err.instancePath)}: ${err.message ?? 'invalid'} ${JSON.stringify(err.params ?? {})}`);
  }
}

function pointerToPath(pointer: string): string {
  let out = '';
  for (const part of pointer.split('/').slice(1)) out += /^\d+$/.test(part) ? `[${part}]` : `${out ? '.' : ''}${part}`;
  return out || '(root)';
}

/** One object as a TypeScript literal, one property per line, with the field path of each line. */
function literal(value: unknown, path: string, indent: string, lines: { text: string; path: string }[], prefix: string, suffix: string): void {
  if (Array.isArray(value)) {
    lines.push({ text: `${indent}${prefix}[`, path });
    value.forEach((v, i) => literal(v, `${path}[${i}]`, `${indent}  `, lines, '', i < value.length - 1 ? ',' : ''));
    lines.push({ text: `${indent}]${suffix}`, path });
  } else if (value !== null && typeof value === 'object') {
    lines.push({ text: `${indent}${prefix}{`, path });
    const entries = Object.entries(value);
    entries.forEach(([k, v], i) => literal(v, path ? `${path}.${k}` : k, `${indent}  `, lines, `${JSON.stringify(k)}: `, i < entries.length - 1 ? ',' : ''));
    lines.push({ text: `${indent}}${suffix}`, path });
  } else {
    lines.push({ text: `${indent}${prefix}${JSON.stringify(value)}${suffix}`, path });
  }
}

/** Problems found by tsc against the models' interfaces (unknown fields, wrong types, missing required fields). */
function strictProblems(objects: readonly KubeObject[], nameOf: (o: KubeObject) => string): string[] {
  const lines: { text: string; path: string; object?: KubeObject }[] = [];
  const imports: string[] = [];
  objects.forEach((o, i) => {
    imports.push(`import type { I${o.kind} as T${i} } from ${JSON.stringify(modelModule(o))};`);
  });
  for (const text of imports) lines.push({ text, path: '' });
  objects.forEach((o, i) => {
    const start = lines.length;
    literal(o, '', '', lines, `export const o${i}: T${i} = `, ';');
    for (let l = start; l < lines.length; l++) lines[l]!.object = o;
  });
  const cache = join(REPO_DIR, 'node_modules', '.cache');
  mkdirSync(cache, { recursive: true });
  const dir = mkdtempSync(join(cache, 'gatehouse-deploy-check-'));
  try {
    writeFileSync(join(dir, 'check.ts'), lines.map((l) => l.text).join('\n'));
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { strict: true, noEmit: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', skipLibCheck: true, types: [] },
        files: ['check.ts'],
      }),
    );
    const tsc = join(REPO_DIR, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', join(dir, 'tsconfig.json'), '--pretty', 'false'], { encoding: 'utf8', timeout: 120_000 });
    if (r.status === 0) return [];
    const problems: string[] = [];
    for (const line of r.stdout.split('\n')) {
      const m = /(?:^|[\\/])check\.ts\((\d+),\d+\): error (TS\d+): (.*)$/.exec(line.trim());
      if (!m) continue;
      const at = lines[Number(m[1]) - 1];
      problems.push(at?.object ? `${nameOf(at.object)}: ${at.path || '(root)'}: ${m[3]} (${m[2]})` : `check.ts:${m[1]}: ${m[3]}`);
    }
    if (problems.length === 0) throw new Error(`tsc failed without a diagnostic on check.ts (exit ${r.status}): ${r.stdout}${r.stderr}`);
    return problems;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Every schema problem of these objects, as `<name>: <field path>: <message>` with the name from
 * `nameOf` (default `Kind/namespace/name`); empty when all are valid Kubernetes objects.
 */
export async function schemaProblems(objects: readonly KubeObject[], nameOf: (o: KubeObject) => string = objectName): Promise<string[]> {
  const problems: string[] = [];
  const unmodelled = new Set<KubeObject>();
  for (const o of objects) {
    const found = await modelProblems(o, nameOf);
    if (found.some((p) => p.startsWith(`${nameOf(o)}: no Kubernetes model`))) unmodelled.add(o);
    problems.push(...found);
  }
  // Objects without a model are already reported; tsc would only repeat it as an import error.
  const modelled = objects.filter((o) => !unmodelled.has(o));
  if (modelled.length > 0) problems.push(...strictProblems(modelled, nameOf));
  return problems;
}
