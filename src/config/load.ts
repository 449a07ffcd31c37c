// Reads YAML files and folders into resources that remember their file and line.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LineCounter, parseAllDocuments, parseDocument, isCollection, isMap, isSeq, isScalar, isPair, visit, type Document, type Node } from 'yaml';
import { readsKind, type FieldPath, type ObjectMeta, type Problem, type Resource, type SourceRef } from './types.js';

export interface LoadResult {
  resources: Resource[];
  problems: Problem[];
  /** Files that were read, as named in problems. */
  files: string[];
}

const YAML_FILE = /\.ya?ml$/i;

/** Lists the YAML files under each path (recursively for folders), named as the user would read them. */
export function listConfigFiles(paths: readonly string[]): { files: string[]; problems: Problem[] } {
  const files: string[] = [];
  const problems: Problem[] = [];
  const walk = (dir: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(dir).sort();
    } catch (e) {
      problems.push(ioProblem(dir, e));
      return;
    }
    for (const name of entries) {
      // Kubernetes ConfigMap mounts keep old generations in `..2026_...` folders and a `..data` link.
      if (name.startsWith('.')) continue;
      const full = join(dir, name);
      let st;
      try {
        st = statSync(full);
      } catch {
        continue; // a dangling link, or removed while we looked
      }
      if (st.isDirectory()) walk(full);
      else if (YAML_FILE.test(name)) files.push(full);
    }
  };
  for (const p of paths) {
    let st;
    try {
      st = statSync(p);
    } catch (e) {
      problems.push(ioProblem(p, e));
      continue;
    }
    if (st.isDirectory()) walk(p);
    else files.push(p);
  }
  return { files, problems };
}

function ioProblem(file: string, e: unknown): Problem {
  const code = (e as NodeJS.ErrnoException)?.code;
  const message = code === 'ENOENT' ? 'no such file or directory' : `cannot read: ${(e as Error)?.message ?? String(e)}`;
  return { file, line: 0, resource: '', path: '', message, severity: 'error' };
}

export function loadPaths(paths: readonly string[]): LoadResult {
  const { files, problems } = listConfigFiles(paths);
  const resources: Resource[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      problems.push(ioProblem(file, e));
      continue;
    }
    const r = parseYamlText(text, file);
    resources.push(...r.resources);
    problems.push(...r.problems);
  }
  return { resources, problems, files };
}

/** A Go template action (`{{ .Values.x }}`, `{{- if ... }}`), as Helm charts are written. */
const TEMPLATE_ACTION = /\{\{-?\s*[^{}\n]*?\s*-?\}\}/;

/**
 * Parses one multi-document YAML text. Documents that are empty or a `List` are handled like
 * kubectl. A text that is not YAML gets one error, the first (not one per document or token); a
 * Helm/Go template that does not read as plain YAML gets one warning and is skipped.
 */
export function parseYamlText(text: string, file: string): { resources: Resource[]; problems: Problem[] } {
  const r = parseDocuments(text, file);
  const template = TEMPLATE_ACTION.exec(text);
  if (template && (r.problems.length > 0 || r.templateJunk)) {
    const line = text.slice(0, template.index).split('\n').length;
    const message = `looks like a Helm/Go template (${JSON.stringify(template[0])}), not plain YAML: skipped; render it first (helm template)`;
    return { resources: [], problems: [{ file, line, resource: '', path: '', message, severity: 'warning' }] };
  }
  const fileLevel = r.problems.filter((p) => p.resource === 'yaml');
  return { resources: r.resources, problems: [...fileLevel.slice(0, 1), ...r.problems.filter((p) => p.resource !== 'yaml')] };
}

function parseDocuments(text: string, file: string): { resources: Resource[]; problems: Problem[]; templateJunk: boolean } {
  const resources: Resource[] = [];
  const problems: Problem[] = [];
  if (text.includes('\0')) {
    return { resources, problems: [{ file, line: 1, resource: 'yaml', path: '', message: 'not a text file (binary content): expected YAML', severity: 'error' }], templateJunk: false };
  }
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const lineAt = (offset: number): number => lineCounter.linePos(offset).line;
  let templateJunk = false;
  // An empty stream (only comments) parses to an EmptyStream.
  const docList = Array.isArray(docs) ? docs : [];
  for (const doc of docList) {
    if (doc.errors.length > 0) {
      for (const err of doc.errors) {
        problems.push({ file, line: lineAt(err.pos[0]), resource: 'yaml', path: '', message: err.message.split('\n')[0] ?? err.message, severity: 'error' });
      }
      continue;
    }
    if (doc.contents === null) continue;
    // `name: {{ .Values.x }}` is valid YAML: a flow mapping whose key is a flow mapping. No
    // Kubernetes document has such keys; a template does.
    const complexKey = collectionKeyOffset(doc);
    if (complexKey !== undefined) {
      templateJunk = true;
      problems.push({ file, line: lineAt(complexKey), resource: 'yaml', path: '', message: 'a mapping key must be a plain value, not a mapping or a list', severity: 'error' });
      continue;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (e) {
      problems.push({ file, line: lineAt(doc.contents.range?.[0] ?? 0), resource: 'yaml', path: '', message: (e as Error).message, severity: 'error' });
      continue;
    }
    if (value === null || value === undefined) continue;
    const docLine = lineAt(doc.contents.range?.[0] ?? 0);
    if (typeof value !== 'object' || Array.isArray(value)) {
      problems.push({ file, line: docLine, resource: 'yaml', path: '', message: 'a document must be a mapping with apiVersion, kind and metadata', severity: 'error' });
      continue;
    }
    const obj = value as Record<string, unknown>;
    const handle = new DocHandle(doc, text);
    if (obj.kind === 'List' && Array.isArray(obj.items)) {
      obj.items.forEach((item, i) => {
        const r = toResource(item, file, handle, lineAt, ['items', i], problems);
        if (r) resources.push(r);
      });
      continue;
    }
    const r = toResource(obj, file, handle, lineAt, [], problems);
    if (r) resources.push(r);
  }
  return { resources, problems, templateJunk };
}

/** The offset of the first mapping key that is itself a mapping or a list, if any. */
function collectionKeyOffset(doc: Document): number | undefined {
  let at: number | undefined;
  visit(doc, {
    Pair(_, pair) {
      if (isCollection(pair.key)) {
        at = pair.key.range?.[0] ?? 0;
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return at;
}

/**
 * A document's syntax tree while the load that parsed it runs (validation asks for many lines
 * then), afterwards only its text, parsed again when a line is asked for (a problem found on a
 * later reload or translation: rare). A resource keeps its lineOf for as long as the configuration
 * is current, and the tree weighs ~15x the text: for 1,000 small VirtualServices ~20 MB of heap.
 */
class DocHandle {
  #doc: Document | null;
  readonly #text: string;
  /** Offset of the document's text in its file. */
  readonly #at: number;
  constructor(doc: Document, fileText: string) {
    this.#doc = doc;
    const [start, , end] = doc.range ?? [0, fileText.length, fileText.length];
    this.#at = start;
    // A copy, not a slice of the file's text (which V8 would keep whole for it).
    this.#text = Buffer.from(fileText.slice(start, end)).toString();
    held.push(this);
    if (held.length === 1) setImmediate(releaseHeld);
  }
  release(): void {
    this.#doc = null;
  }
  /** File offset of the node at `path`, or undefined if there is none. */
  offsetOf(path: FieldPath): number | undefined {
    if (this.#doc) return nodeAt(this.#doc, path)?.range?.[0];
    let doc = reparsed.get(this);
    if (!doc) {
      doc = parseDocument(this.#text);
      if (reparsed.size >= REPARSED_MAX) reparsed.delete(reparsed.keys().next().value!);
      reparsed.set(this, doc);
    }
    const at = nodeAt(doc, path)?.range?.[0];
    return at === undefined ? undefined : this.#at + at;
  }
}

/** Trees of the load running now: released once the synchronous job that loads them has ended. */
const held: DocHandle[] = [];
function releaseHeld(): void {
  for (const h of held.splice(0)) h.release();
}

/** Documents parsed again for their lines, the most recent few (a problem list often names one document many times). */
const reparsed = new Map<DocHandle, Document>();
const REPARSED_MAX = 16;

function toResource(
  value: unknown,
  file: string,
  doc: DocHandle,
  lineAt: (offset: number) => number,
  base: FieldPath,
  problems: Problem[],
): Resource | undefined {
  const lineOf = (path: FieldPath): number => {
    const full = [...base, ...path];
    for (let n = full.length; n >= 0; n--) {
      const at = doc.offsetOf(full.slice(0, n));
      if (at !== undefined) return lineAt(at);
    }
    return 1;
  };
  const source: SourceRef = { file, line: lineOf([]), lineOf };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    problems.push({ file, line: source.line, resource: 'yaml', path: '', message: 'a document must be a mapping with apiVersion, kind and metadata', severity: 'error' });
    return undefined;
  }
  const obj = value as Record<string, unknown>;
  const meta = (obj.metadata ?? {}) as Record<string, unknown>;
  const kind = typeof obj.kind === 'string' ? obj.kind : '';
  const name = typeof meta.name === 'string' ? meta.name : '';
  const namespace = typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : 'default';
  const id = `${kind || '?'}/${namespace}/${name || '?'}`;
  const fail = (path: FieldPath, message: string): undefined => {
    problems.push({ file, line: lineOf(path), resource: id, path: path.join('.'), message, severity: 'error' });
    return undefined;
  };
  const apiVersion = typeof obj.apiVersion === 'string' ? obj.apiVersion : '';
  if (!apiVersion || !kind) {
    // Without apiVersion or kind this is not a Kubernetes object (a Helm Chart.yaml or values.yaml,
    // an OpenAPI file...): one warning per file, unless what is there names a kind Gatehouse reads.
    if (!namesReadKind(apiVersion, kind)) {
      const message = 'not a Kubernetes object (no apiVersion and kind): ignored';
      if (!problems.some((p) => p.file === file && p.message === message)) problems.push({ file, line: source.line, resource: '', path: '', message, severity: 'warning' });
      return undefined;
    }
    return fail([apiVersion ? 'kind' : 'apiVersion'], 'missing required field');
  }
  // A kind Gatehouse does not read (IstioOperator, Kustomization, Deployment, ...) is only named in
  // one warning by validate(); its metadata is its own business.
  if (!readsKind(apiVersion, kind)) {
    const m = typeof obj.metadata === 'object' && obj.metadata !== null && !Array.isArray(obj.metadata) ? meta : {};
    const metadata: ObjectMeta = { name: typeof m.name === 'string' && m.name !== '' ? m.name : '?', namespace: typeof m.namespace === 'string' && m.namespace !== '' ? m.namespace : 'default' };
    // The service registry's kinds are read from the API only, but kept whole, as the API source
    // keeps them, for whoever translates files holding them (the golden cases).
    if (isRegistryDocument(apiVersion, kind)) {
      if (isStringMap(m.labels)) metadata.labels = m.labels;
      if (isStringMap(m.annotations)) metadata.annotations = m.annotations;
      return { apiVersion, kind, metadata, spec: obj, source };
    }
    return { apiVersion, kind, metadata, spec: obj.spec ?? {}, source };
  }
  if (typeof obj.metadata !== 'object' || obj.metadata === null || Array.isArray(obj.metadata)) return fail(['metadata'], 'missing required field');
  if (!name) return fail(['metadata', 'name'], 'missing required field');
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name) || name.length > 253) {
    return fail(['metadata', 'name'], `invalid name "${name}": must be a lowercase RFC 1123 name`);
  }
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(namespace) || namespace.length > 63) {
    return fail(['metadata', 'namespace'], `invalid namespace "${namespace}": must be a lowercase RFC 1123 label`);
  }
  const metadata: ObjectMeta = { name, namespace };
  if (isStringMap(meta.labels)) metadata.labels = meta.labels;
  if (isStringMap(meta.annotations)) metadata.annotations = meta.annotations;
  const isK8sCore = obj.apiVersion === 'v1' && (kind === 'Secret' || kind === 'ConfigMap');
  const spec = isK8sCore ? obj : obj.spec === undefined || obj.spec === null ? {} : obj.spec;
  return { apiVersion, kind, metadata, spec, source };
}

/** Service, EndpointSlice and Pod: Kubernetes kinds whose resource `spec` is the whole document. */
function isRegistryDocument(apiVersion: string, kind: string): boolean {
  return (apiVersion === 'v1' && (kind === 'Service' || kind === 'Pod')) || (apiVersion === 'discovery.k8s.io/v1' && kind === 'EndpointSlice');
}

/** Whether a partial apiVersion/kind points at something Gatehouse reads (then a missing half is an error). */
function namesReadKind(apiVersion: string, kind: string): boolean {
  if (kind) return readsKind(`networking.istio.io/v1`, kind) || readsKind('security.istio.io/v1', kind) || readsKind('telemetry.istio.io/v1', kind) || readsKind('v1', kind);
  return apiVersion.startsWith('networking.istio.io/') || apiVersion.startsWith('security.istio.io/') || apiVersion.startsWith('telemetry.istio.io/');
}

function isStringMap(v: unknown): v is Record<string, string> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');
}

function nodeAt(doc: Document, path: FieldPath): Node | undefined {
  let node: unknown = doc.contents;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return undefined;
      // Point at the key of the field itself (whatever its value: a block mapping or list starts on
      // the next line), so the line is the one the user reads the field name on.
      const last = i === path.length - 1;
      node = last && isScalar(pair.key) ? pair.key : (pair.value ?? pair.key);
      if (isScalar(pair.value) && isScalar(pair.key)) node = pair.key;
    } else if (isSeq(node) && typeof seg === 'number') {
      node = node.items[seg];
    } else {
      return undefined;
    }
  }
  return node as Node | undefined;
}
