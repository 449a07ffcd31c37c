// `--write-status`: Istio's `status.validationMessages` on the Istio objects Gatehouse refuses or
// warns about, as istiod writes them with status enabled (PILOT_ENABLE_STATUS): one message per
// analysis code and level, with Istio's documentation link; no message when the object is fine
// (and a list Gatehouse wrote before is removed). Written with a merge patch of the `status`
// subresource, one object at a time, only when it differs from what the object carries; the
// write comes back as a watch event whose content fingerprint is unchanged, so it triggers nothing.
// A 403 is logged once per kind, with the RBAC rule that is missing.
import { asStatus, type KubeClient } from './client.js';
import { collectionPath, qualifiedResource, type WatchedKind } from './kinds.js';
import type { StoredObject } from './objects.js';

export interface ValidationMessage {
  type: { code: string; name?: string };
  level: 'ERROR' | 'WARNING' | 'INFO';
  documentationUrl: string;
}

/** Istio's names for the analysis codes Gatehouse reports. */
const CODE_NAMES: Readonly<Record<string, string>> = {
  IST0002: 'Deprecated',
  IST0101: 'ReferencedResourceNotFound',
  IST0106: 'SchemaValidationError',
  IST0109: 'ConflictingMeshGatewayVirtualServiceHosts',
  IST0110: 'ConflictingSidecarWorkloadSelectors',
  IST0111: 'MultipleSidecarsWithoutWorkloadSelectors',
  IST0128: 'NoServerCertificateVerificationDestinationLevel',
  IST0129: 'NoServerCertificateVerificationPortLevel',
  IST0130: 'VirtualServiceUnreachableRule',
  IST0131: 'VirtualServiceIneffectiveMatch',
  IST0132: 'VirtualServiceHostNotFoundInGateway',
  IST0133: 'SchemaWarning',
  IST0149: 'JwtClaimBasedRoutingWithoutRequestAuthN',
  IST0173: 'DestinationRuleSubsetNotSelectPods',
  IST0177: 'ConflictingServiceEntryProtocols',
};

/**
 * The message for one problem: its own `[ISTnnnn]` code when it has one; otherwise a reference
 * error is IST0101, any other error IST0106 (schema validation) and a warning IST0133.
 */
export function validationMessage(severity: 'error' | 'warning', text: string): ValidationMessage {
  const own = /\[(IST\d{4})\]/.exec(text)?.[1];
  const code = own ?? (severity === 'warning' ? 'IST0133' : / not found\b|is not defined by any/.test(text) ? 'IST0101' : 'IST0106');
  const name = CODE_NAMES[code];
  return { type: { code, ...(name ? { name } : {}) }, level: severity === 'error' ? 'ERROR' : 'WARNING', documentationUrl: `https://istio.io/latest/docs/reference/config/analysis/${code.toLowerCase()}/` };
}

/** One message per code and level, errors first, in a stable order. */
export function validationMessages(problems: ReadonlyArray<{ severity: 'error' | 'warning'; message: string }>): ValidationMessage[] {
  const out = new Map<string, ValidationMessage>();
  for (const p of problems) {
    const m = validationMessage(p.severity, p.message);
    out.set(`${m.level === 'ERROR' ? 0 : 1}${m.type.code}`, m);
  }
  return [...out.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, m]) => m);
}

export interface StatusWriterHooks {
  warn(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
}

export class StatusWriter {
  readonly #client: KubeClient;
  readonly #kinds: ReadonlyMap<string, WatchedKind>;
  readonly #hooks: StatusWriterHooks;
  /** id → the messages to write next (JSON), replaced by newer wishes before they are written. */
  readonly #queue = new Map<string, { object: StoredObject; json: string }>();
  /** id → what was last written (the object's own status may lag until its watch event comes). */
  readonly #written = new Map<string, string>();
  readonly #forbidden = new Set<string>();
  #running = false;
  #stopped = false;

  constructor(client: KubeClient, kinds: ReadonlyMap<string, WatchedKind>, hooks: StatusWriterHooks) {
    this.#client = client;
    this.#kinds = kinds;
    this.#hooks = hooks;
  }

  /** The messages each object should carry now (Istio kinds only; others are ignored). */
  update(desired: ReadonlyArray<{ object: StoredObject; messages: ValidationMessage[] }>): void {
    const ids = new Set(desired.map((d) => d.object.id));
    for (const id of [...this.#written.keys()]) if (!ids.has(id)) this.#written.delete(id);
    for (const { object, messages } of desired) {
      if (!this.#kinds.has(object.kind)) continue;
      const json = JSON.stringify(messages);
      const present = this.#written.get(object.id) ?? object.validationMessages ?? '[]';
      if (present === json) {
        this.#queue.delete(object.id);
        continue;
      }
      this.#queue.set(object.id, { object, json });
    }
    void this.#drain();
  }

  stop(): void {
    this.#stopped = true;
    this.#queue.clear();
  }

  async #drain(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      while (!this.#stopped && this.#queue.size > 0) {
        const [id, job] = this.#queue.entries().next().value as [string, { object: StoredObject; json: string }];
        this.#queue.delete(id);
        await this.#write(job.object, job.json);
      }
    } finally {
      this.#running = false;
    }
  }

  async #write(o: StoredObject, json: string): Promise<void> {
    const kind = this.#kinds.get(o.kind)!;
    if (this.#forbidden.has(o.kind)) return;
    const version = o.apiVersion.slice(o.apiVersion.indexOf('/') + 1);
    const path = `${collectionPath(kind, version, o.metadata.namespace)}/${encodeURIComponent(o.metadata.name)}/status`;
    const messages = JSON.parse(json) as ValidationMessage[];
    const body = { status: { validationMessages: messages.length > 0 ? messages : null } };
    try {
      const a = await this.#client.patch(path, body, 'application/merge-patch+json');
      if (a.status === 200) {
        this.#written.set(o.id, json);
        this.#hooks.debug(`${o.id}: status.validationMessages written`, { messages: messages.length });
      } else if (a.status === 403) {
        this.#forbidden.add(o.kind);
        const rule = `apiGroups: [${JSON.stringify(kind.group)}], resources: [${JSON.stringify(`${kind.resource}/status`)}], verbs: ["update","patch"]`;
        this.#hooks.warn(`--write-status: Gatehouse may not write the status of ${qualifiedResource(kind)} (${asStatus(a.body)?.message ?? '403 Forbidden'}); not written for ${o.kind} objects. Missing rule: ${rule}`, { kind: o.kind, rule });
      } else if (a.status !== 404) {
        this.#hooks.debug(`${o.id}: status not written (${a.status} ${asStatus(a.body)?.message ?? ''})`);
      }
    } catch (err) {
      this.#hooks.debug(`${o.id}: status not written (${(err as Error).message})`);
    }
  }
}
