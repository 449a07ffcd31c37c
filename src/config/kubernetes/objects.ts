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

/**
 * A Pod's named container ports (a Service's named targetPort is one of them), of its containers
 * and of its native sidecars (init containers with restartPolicy Always); nothing else of them.
 */
function podPorts(spec: Record<string, unknown>): Record<string, unknown> {
  const named = (c: unknown): Array<Record<string, unknown>> => {
    const ports = (c as { ports?: unknown })?.ports;
    return Array.isArray(ports) ? ports.filter((p) => typeof p?.name === 'string' && p.name !== '').map((p) => pick(p as Record<string, unknown>, ['name', 'containerPort', 'protocol'])) : [];
  };
  const out: Record<string, unknown> = {};
  const containers = (Array.isArray(spec.containers) ? spec.containers : []).map((c) => ({ ports: named(c) })).filter((c) => c.ports.length > 0);
  const sidecars = (Array.isArray(spec.initContainers) ? spec.initContainers : []).filter((c) => (c as { restartPolicy?: unknown })?.restartPolicy === 'Always').map((c) => ({ restartPolicy: 'Always', ports: named(c) })).filter((c) => c.ports.length > 0);
  if (containers.length > 0) out.containers = containers;
  if (sidecars.length > 0) out.initContainers = sidecars;
  return out;
}

/** Its Ready condition only (the others, and probe times, change without mattering). */
function podReady(status: Record<string, unknown>): Record<string, unknown> {
  const ready = (Array.isArray(status.conditions) ? status.conditions : []).find((c) => (c as { type?: unknown })?.type === 'Ready') as { status?: unknown } | undefined;
  return ready ? { conditions: [{ type: 'Ready', status: String(ready.status) }] } : {};
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
      default: // Pod: labels (in metadata), where it runs, its addresses, readiness and named ports
        body = { ...head, spec: { ...pick(spec, ['nodeName', 'serviceAccountName', 'hostNetwork']), ...podPorts(spec) }, status: { ...pick(status, ['phase', 'podIP', 'podIPs']), ...podReady(status) } };
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
