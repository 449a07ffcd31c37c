// Validation of a whole configuration: which resources Gatehouse uses (known kinds, de-duplicated),
// and every problem with the line of the offending field. Per-kind structure lives in
// schema-istio.ts, cross-resource checks in validate-refs.ts.
import { LineCounter, isMap, isPair, isScalar, isSeq, parseDocument, type Document, type Node } from 'yaml';
import type { FieldPath, Problem, Resource } from './types.js';
import { NETWORKING_VERSIONS, SECURITY_VERSIONS, TELEMETRY_VERSIONS, describeSource, formatPath, readsKind, resourceId } from './types.js';
import { asObj, type Schema } from './schema.js';
import {
  authorizationPolicySpec, configMapDocument, destinationRuleSpec, gatewaySpec, meshConfigSchema, peerAuthenticationSpec,
  requestAuthenticationSpec, secretDocument, serviceEntrySpec, sidecarSpec, telemetrySpec, virtualServiceSpec, workloadEntrySpec,
} from './schema-istio.js';
import { endpointSliceDocument, podDocument, serviceDocument } from './schema-kube.js';
import { crossCheck, reporterFor } from './validate-refs.js';
import { checkClaimRoutes } from './jwt-claims.js';

export interface ValidateOptions {
  /** This gateway's own namespace (`--namespace`, default `istio-system`). */
  gatewayNamespace: string;
  /** This gateway's workload labels (`--labels`). */
  labels: Record<string, string>;
  rootNamespace: string;
  /** `validate` without --labels: check the servers of every Gateway (validate-refs.ts). */
  allGateways?: boolean;
  /** `--cluster-domain`: short hosts complete to `<name>.<namespace>.svc.<domain>` (default cluster.local). */
  clusterDomain?: string;
  /**
   * Each resource's own problems (schema and per-kind checks), remembered by resource object:
   * `--kubernetes` checks the same unchanged objects again at every change, this checks them once.
   */
  ownProblems?: WeakMap<Resource, Problem[]>;
}

interface KindDef {
  apiVersions: readonly string[];
  schema: Schema;
  /** `spec` for Istio kinds; `document` for Kubernetes core kinds (resource.spec is the whole document). */
  root: 'spec' | 'document';
  extra?: (r: Resource, problems: Problem[]) => void;
  /**
   * Read only from the Kubernetes API (stored for the service registry, not translated yet); in a
   * config file such a kind is ignored with one warning, as any kind Gatehouse does not read.
   */
  apiOnly?: boolean;
}

const NETWORKING = NETWORKING_VERSIONS;
const SECURITY = SECURITY_VERSIONS;

const KINDS: Readonly<Record<string, KindDef>> = {
  Gateway: { apiVersions: NETWORKING, schema: gatewaySpec, root: 'spec' },
  VirtualService: { apiVersions: NETWORKING, schema: virtualServiceSpec, root: 'spec', extra: (r, problems) => checkClaimRoutes(r, reporterFor(r, problems)) },
  DestinationRule: { apiVersions: NETWORKING, schema: destinationRuleSpec, root: 'spec' },
  ServiceEntry: { apiVersions: NETWORKING, schema: serviceEntrySpec, root: 'spec' },
  WorkloadEntry: { apiVersions: NETWORKING, schema: workloadEntrySpec, root: 'spec' },
  Sidecar: { apiVersions: NETWORKING, schema: sidecarSpec, root: 'spec' },
  PeerAuthentication: { apiVersions: SECURITY, schema: peerAuthenticationSpec, root: 'spec' },
  RequestAuthentication: { apiVersions: SECURITY, schema: requestAuthenticationSpec, root: 'spec' },
  AuthorizationPolicy: { apiVersions: SECURITY, schema: authorizationPolicySpec, root: 'spec' },
  Telemetry: { apiVersions: TELEMETRY_VERSIONS, schema: telemetrySpec, root: 'spec' },
  Secret: { apiVersions: ['v1'], schema: secretDocument, root: 'document' },
  ConfigMap: { apiVersions: ['v1'], schema: configMapDocument, root: 'document', extra: checkIstioConfigMap },
  Service: { apiVersions: ['v1'], schema: serviceDocument, root: 'document', apiOnly: true },
  EndpointSlice: { apiVersions: ['discovery.k8s.io/v1'], schema: endpointSliceDocument, root: 'document', apiOnly: true },
  Pod: { apiVersions: ['v1'], schema: podDocument, root: 'document', apiOnly: true },
};

function kindDef(r: Resource): KindDef | undefined {
  const def = Object.hasOwn(KINDS, r.kind) ? KINDS[r.kind] : undefined;
  if (!def || !def.apiVersions.includes(r.apiVersion)) return undefined;
  if (def.apiOnly) return r.source.api ? def : undefined;
  return readsKind(r.apiVersion, r.kind) ? def : undefined;
}

export interface ValidateResult {
  problems: Problem[];
  /** The resources Gatehouse uses: known kinds, first of each kind/namespace/name. */
  accepted: Resource[];
  /** Those of them whose own structure is valid, so that later stages can check them too. */
  checkable: Resource[];
}

export function validate(resources: readonly Resource[], opts: ValidateOptions): ValidateResult {
  const problems: Problem[] = [];
  const accepted: Resource[] = [];
  const checkable: Resource[] = [];
  const unsupported = new Set<string>();
  const first = new Map<string, Resource>();

  for (const r of resources) {
    const def = kindDef(r);
    if (!def) {
      const group = r.apiVersion.includes('/') ? r.apiVersion.slice(0, r.apiVersion.lastIndexOf('/')) : '';
      const once = `${r.kind}|${group}`;
      if (!unsupported.has(once)) {
        unsupported.add(once);
        reporterFor(r, problems).warn([], `kind ${r.kind} (${r.apiVersion}) is not supported by Gatehouse; ignored`);
      }
      continue;
    }
    const out = reporterFor(r, problems);
    const before = problems.length;
    const known = opts.ownProblems?.get(r);
    if (known) problems.push(...known);
    else {
      def.schema.check(r.spec, def.root === 'spec' ? ['spec'] : [], out);
      def.extra?.(r, problems);
      opts.ownProblems?.set(r, problems.slice(before));
    }
    const wellFormed = !problems.slice(before).some((p) => p.severity === 'error');

    const id = resourceId(r);
    const prev = first.get(id);
    if (prev) {
      out.error([], `duplicate ${id}, first defined at ${describeSource(prev.source)}`);
      continue;
    }
    first.set(id, r);
    accepted.push(r);
    if (wellFormed) checkable.push(r);
  }

  crossCheck(accepted, opts, problems);
  return { problems: sortProblems(problems, resources), accepted, checkable };
}

/** In file order (as the files were given), then by line; stable otherwise. */
function sortProblems(problems: Problem[], resources: readonly Resource[]): Problem[] {
  const fileOrder = new Map<string, number>();
  for (const r of resources) if (!fileOrder.has(r.source.file)) fileOrder.set(r.source.file, fileOrder.size);
  const rank = (f: string): number => fileOrder.get(f) ?? Number.MAX_SAFE_INTEGER;
  return problems
    .map((p, i) => ({ p, i }))
    .sort((a, b) => rank(a.p.file) - rank(b.p.file) || a.p.line - b.p.line || a.i - b.i)
    .map((x) => x.p);
}

// ---- ConfigMap `istio`: `data.mesh` is MeshConfig YAML --------------------------------------------

function checkIstioConfigMap(r: Resource, problems: Problem[]): void {
  if (r.metadata.name !== 'istio') return;
  const mesh = asObj(asObj(r.spec).data).mesh;
  if (typeof mesh !== 'string') return;
  const keyLine = r.source.lineOf(['data', 'mesh']);
  // A multi-line value is a block scalar (`mesh: |`): its first line is the line after the key.
  problems.push(...meshConfigProblems(mesh, { file: r.source.file, resource: resourceId(r), prefix: ['data', 'mesh'], keyLine, block: mesh.includes('\n') }));
}

/**
 * Every problem of MeshConfig YAML text, at its own line: in a ConfigMap's `data.mesh` (lines
 * counted from `keyLine`, paths under `prefix`), or a whole `--mesh-config` file (keyLine 0, block).
 */
export function meshConfigProblems(text: string, at: { file: string; resource: string; prefix: FieldPath; keyLine: number; block: boolean }): Problem[] {
  const problems: Problem[] = [];
  const { keyLine, block } = at;
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const lastLine = keyLine + text.replace(/\n+$/, '').split('\n').length;
  const lineAt = (offset: number): number => (block ? Math.min(keyLine + lineCounter.linePos(offset).line, lastLine) : keyLine);
  const push = (severity: Problem['severity'], inner: FieldPath, line: number, message: string): void => {
    problems.push({ file: at.file, line, resource: at.resource, path: formatPath([...at.prefix, ...inner]), message, severity });
  };
  if (doc.errors.length > 0) {
    for (const e of doc.errors) push('error', [], lineAt(e.pos[0]), `invalid mesh config YAML: ${e.message.split('\n')[0] ?? e.message}`);
    return problems;
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    push('error', [], Math.max(keyLine, 1), `invalid mesh config YAML: ${(e as Error).message}`);
    return problems;
  }
  if (value === null || value === undefined) return problems;
  const lineOf = (path: FieldPath): number => {
    for (let n = path.length; n >= 0; n--) {
      const node = nodeAt(doc, path.slice(0, n));
      if (node?.range) return lineAt(node.range[0]);
    }
    return Math.max(keyLine, 1);
  };
  meshConfigSchema.check(value, [], {
    error: (p, m) => push('error', p, lineOf(p), m),
    warn: (p, m) => push('warning', p, lineOf(p), m),
  });
  return problems;
}

/** The node at a path, pointing at the key for the last segment (the line the field name is on). */
function nodeAt(doc: Document, path: FieldPath): Node | undefined {
  let node: unknown = doc.contents;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return undefined;
      node = i === path.length - 1 && isScalar(pair.key) ? pair.key : pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      node = node.items[seg];
    } else {
      return undefined;
    }
  }
  return (node ?? undefined) as Node | undefined;
}
