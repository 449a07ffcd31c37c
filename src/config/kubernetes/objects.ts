// API objects as Gatehouse keeps them: trimmed to what the configuration reads (no managedFields,
// status, last-applied annotation...), with a content fingerprint so that a relist or a no-op
// update that changes nothing but the resourceVersion is not a change.
import { createHash } from 'node:crypto';
import { apiSource, type ObjectMeta, type Resource } from '../types.js';
import type { ApiObject } from './client.js';

export interface StoredObject {
  /** `Kind/namespace/name` */
  id: string;
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  /** `spec` for Istio kinds; the trimmed document for Kubernetes core kinds. */
  body: unknown;
  resourceVersion: string;
  creationTimestamp: string;
  /** Hash of the trimmed content (not of the resourceVersion). */
  fingerprint: string;
  /** Istio kinds: `status.validationMessages` as JSON, if any (`--write-status`; not content). */
  validationMessages?: string;
}

/** Kinds whose Resource `spec` is the whole document (Kubernetes kinds), as the file loader has them. */
const DOCUMENT_KINDS = new Set(['Secret', 'ConfigMap', 'Service', 'EndpointSlice', 'Pod']);

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

function stringMap(v: unknown, drop?: string): Record<string, string> | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) if (typeof x === 'string' && k !== drop) out[k] = x;
  return Object.keys(out).length > 0 ? out : undefined;
}

function pick(o: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (o[k] !== undefined && o[k] !== null) out[k] = o[k];
  return out;
}

/** The part of an API object Gatehouse keeps; `apiVersion` is the version it was read at. */
export function trimObject(kind: string, apiVersion: string, o: ApiObject): StoredObject {
  const m = o.metadata;
  const metadata: ObjectMeta = { name: m.name, namespace: m.namespace ?? 'default' };
  const labels = stringMap(m.labels);
  const annotations = stringMap(m.annotations, LAST_APPLIED);
  if (labels) metadata.labels = labels;
  if (annotations) metadata.annotations = annotations;
  let body: unknown;
  if (!DOCUMENT_KINDS.has(kind)) {
    body = o.spec ?? {};
  } else {
    const head = { apiVersion, kind, metadata };
    const spec = (o.spec ?? {}) as Record<string, unknown>;
    const status = (o.status ?? {}) as Record<string, unknown>;
    switch (kind) {
      case 'Secret':
        body = { ...head, ...pick(o, ['type', 'data', 'immutable']) };
        break;
      case 'ConfigMap':
        body = { ...head, ...pick(o, ['data', 'binaryData', 'immutable']) };
        break;
      case 'Service':
        body = { ...head, spec };
        break;
      case 'EndpointSlice':
        body = { ...head, ...pick(o, ['addressType', 'endpoints', 'ports']) };
        break;
      default: // Pod: labels (in metadata), where it runs and its addresses
        body = { ...head, spec: pick(spec, ['nodeName', 'serviceAccountName', 'hostNetwork']), status: pick(status, ['phase', 'podIP', 'podIPs']) };
    }
  }
  const fingerprint = createHash('sha1').update(JSON.stringify([apiVersion, metadata, body])).digest('base64');
  const messages = (o.status as { validationMessages?: unknown } | undefined)?.validationMessages;
  return {
    ...(Array.isArray(messages) && messages.length > 0 ? { validationMessages: JSON.stringify(messages) } : {}),
    id: `${kind}/${metadata.namespace}/${metadata.name}`,
    apiVersion,
    kind,
    metadata,
    body,
    resourceVersion: m.resourceVersion ?? '',
    creationTimestamp: m.creationTimestamp ?? '',
    fingerprint,
  };
}

/** A stored object as a configuration resource (no file, no lines; its resourceVersion). */
export function toResource(s: StoredObject): Resource {
  return { apiVersion: s.apiVersion, kind: s.kind, metadata: s.metadata, spec: s.body, source: apiSource(s.resourceVersion) };
}

/** Istio's order for configuration of one kind: oldest first, then namespace and name. */
export function compareObjects(a: StoredObject, b: StoredObject): number {
  if (a.creationTimestamp !== b.creationTimestamp) return a.creationTimestamp < b.creationTimestamp ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
