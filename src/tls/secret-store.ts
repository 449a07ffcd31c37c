// The data plane's certificates: the snapshot's SDS secrets loaded and checked, the last good
// version of each kept when a new one fails (a bad file replacement logs and changes nothing),
// ACME secrets from the ACME manager, and the expiry of each as a metric.
import { Gauge, type Registry } from 'prom-client';
import { MESH_CERT_SECRET, MESH_ROOT_SECRET, type AcmeSecretSource, type Secret } from '../controlplane/snapshot.js';
import type { Logger } from '../telemetry/log.js';
import { loadSecret, secretFiles } from './material.js';
import type { CaBundle, Material, ServerCertificate } from './pem.js';

/** Where ACME secrets get their certificate (src/tls/acme.ts). */
export interface AcmeProvider {
  /** Starts or keeps managing a certificate; its current version (a placeholder until issued). */
  ensure(name: string, source: AcmeSecretSource): Promise<ServerCertificate>;
  /** Stops managing the certificates not named. */
  retain(names: ReadonlySet<string>): void;
  /** Called when a managed certificate was issued or renewed. */
  onUpdate: (name: string) => void;
}

/**
 * The mesh identity of this process (src/tls/mesh-ca.ts): SDS `default` (its workload
 * certificate) and `ROOTCA` (the mesh root), which ISTIO_MUTUAL clusters name. A secret of the
 * snapshot with the same name (a replica's, received over SDS) wins.
 */
export interface MeshIdentityProvider {
  certificate(): ServerCertificate | undefined;
  root(): CaBundle | undefined;
}

export const EXPIRY_METRIC = 'gatehouse_certificate_expiry_timestamp_seconds';

export class SecretStore {
  readonly #log: Logger;
  readonly #acme: AcmeProvider | undefined;
  readonly #expiry: Gauge<'secret'> | null;
  #secrets = new Map<string, Secret>();
  readonly #material = new Map<string, Material>();
  /** Certificates that changed outside a config change (ACME issuance); set by the data plane. */
  onChange: (names: ReadonlySet<string>) => void = () => undefined;

  readonly #mesh: MeshIdentityProvider | undefined;

  constructor(log: Logger, registry: Registry | null, acme?: AcmeProvider, mesh?: MeshIdentityProvider) {
    this.#log = log;
    this.#acme = acme;
    this.#mesh = mesh;
    this.#expiry = registry
      ? new Gauge({ name: EXPIRY_METRIC, help: 'Expiry time (notAfter, unix seconds) of each certificate the gateway serves, by SDS secret name', labelNames: ['secret'], registers: [registry] })
      : null;
    if (acme) {
      acme.onUpdate = (name) => {
        const source = this.#secrets.get(name)?.acme;
        if (!source) return;
        void acme.ensure(name, source).then((m) => {
          if (this.#secrets.get(name)?.acme === source && this.#set(name, m)) this.onChange(new Set([name]));
        });
      };
    }
  }

  /** The secrets of a new snapshot; returns the names whose material is new or changed. */
  async update(secrets: ReadonlyMap<string, Secret>): Promise<Set<string>> {
    this.#secrets = new Map(secrets);
    for (const name of [...this.#material.keys()]) {
      if (secrets.has(name)) continue;
      this.#material.delete(name);
      this.#expiry?.remove({ secret: name });
    }
    this.#acme?.retain(new Set([...secrets.values()].filter((s) => s.acme).map((s) => s.name)));
    const changed = this.refresh();
    for (const [name, secret] of this.#secrets) {
      if (!secret.acme) continue;
      if (!this.#acme) {
        this.#log.error({ secret: name }, 'ACME certificates are not enabled in this process; not served');
        continue;
      }
      if (this.#set(name, await this.#acme.ensure(name, secret.acme))) changed.add(name);
    }
    return changed;
  }

  /** Re-reads every secret from the config or files (not ACME ones); returns the names that changed. */
  refresh(): Set<string> {
    const changed = new Set<string>();
    for (const [name, secret] of this.#secrets) if (!secret.acme && this.#load(name, secret)) changed.add(name);
    return changed;
  }

  #load(name: string, secret: Secret): boolean {
    let m: Material;
    try {
      m = loadSecret(secret);
    } catch (e) {
      const why = (e as Error).message;
      const had = this.#material.has(name);
      this.#log.error({ secret: name, error: why }, had ? `certificate update rejected: ${why}; keeping the last good certificate` : `certificate cannot be loaded: ${why}`);
      return false;
    }
    return this.#set(name, m);
  }

  #set(name: string, m: Material): boolean {
    const prev = this.#material.get(name);
    if (prev?.hash === m.hash) return false;
    this.#material.set(name, m);
    const notAfter = m.kind === 'cert' ? m.notAfter.getTime() : Math.min(...m.certs.map((c) => new Date(c.validTo).getTime()));
    this.#expiry?.set({ secret: name }, Math.floor(notAfter / 1000));
    if (prev) this.#log.info({ secret: name, hash: m.hash }, 'certificate changed; new handshakes use it');
    return true;
  }

  certificate(name: string): ServerCertificate | undefined {
    const m = this.#material.get(name);
    if (m === undefined && name === MESH_CERT_SECRET) return this.#mesh?.certificate();
    return m?.kind === 'cert' ? m : undefined;
  }

  ca(name: string): CaBundle | undefined {
    const m = this.#material.get(name);
    if (m === undefined && name === MESH_ROOT_SECRET) return this.#mesh?.root();
    return m?.kind === 'ca' ? m : undefined;
  }

  /** Files the current secrets are read from. */
  files(): string[] {
    return [...new Set([...this.#secrets.values()].flatMap(secretFiles))].sort();
  }
}
