// Certificates from an ACME directory (acme-client) for the SIMPLE HTTPS servers of Gateways
// annotated `gatehouse.io/acme-directory`. HTTP-01 challenges are answered by the gateway's own
// plaintext HTTP listeners (acme-challenges.ts). The account key (one per directory) and the
// certificates are kept where the coordination says (acme-coordination.ts): the state directory
// (GATEHOUSE_STATE_DIR, default ./.gatehouse-state) for one process, or with `--kubernetes` the
// Secret `gatehouse-acme` that every replica serves from, written only by the replica holding the
// Lease `gatehouse-acme`. Only the process that may (`leading`) orders; a certificate is renewed at
// 2/3 of its lifetime; failures are retried with exponential backoff, logged, and counted in
// `gatehouse_acme_orders_total`. Until the first certificate exists, a self-signed placeholder is
// served (and logged).
import type AcmeLib from 'acme-client';
import { createHash, webcrypto } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { resolve } from 'node:path';
import { rootCertificates } from 'node:tls';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { AcmeSecretSource } from '../controlplane/snapshot.js';
import type { Logger } from '../telemetry/log.js';
import { FileAcmeCoordination, NotLeadingError, type AcmeCoordination, type StoredCertificate } from './acme-coordination.js';
import { parseServerCertificate, type ServerCertificate } from './pem.js';
import { loadX509 } from './x509-lib.js';
import type { AcmeProvider } from './secret-store.js';


export const STATE_DIR_ENV = 'GATEHOUSE_STATE_DIR';
export const DEFAULT_STATE_DIR = '.gatehouse-state';

export function stateDir(): string {
  return resolve(process.env[STATE_DIR_ENV] || DEFAULT_STATE_DIR);
}

export interface AcmeManagerOptions {
  log: Logger;
  registry?: Registry | null;
  /** Default: GATEHOUSE_STATE_DIR or ./.gatehouse-state. */
  stateDir?: string;
  /** Renew when this fraction of the lifetime has passed (default 2/3). */
  renewAt?: number;
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Where the state lives and whether this process may order: default, the state directory (this process alone). */
  coordination?: AcmeCoordination;
}

interface Managed {
  name: string;
  source: AcmeSecretSource;
  /** Identity of the request: directory, hosts, email; a change means a new certificate. */
  key: string;
  current: ServerCertificate;
  /** True while `current` is the self-signed placeholder. */
  placeholder: boolean;
  /** The next order or renewal (only while this process may order). */
  timer: NodeJS.Timeout | null;
  failures: number;
  stopped: boolean;
  running: boolean;
}

/** Longest setTimeout Node allows (~24.8 days); longer waits re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class AcmeManager implements AcmeProvider {
  readonly #log: Logger;
  readonly #coord: AcmeCoordination;
  readonly #renewAt: number;
  readonly #retryMin: number;
  readonly #retryMax: number;
  readonly #orders: Counter<'secret' | 'result'> | null;
  readonly #managed = new Map<string, Managed>();
  readonly #trusted = new Set<string>();
  #acmeLib: Promise<typeof AcmeLib> | null = null;
  #started: Promise<void> | null = null;
  #leading = false;
  onUpdate: (name: string) => void = () => undefined;

  constructor(opts: AcmeManagerOptions) {
    this.#log = opts.log;
    this.#coord = opts.coordination ?? new FileAcmeCoordination(opts.stateDir ?? stateDir());
    this.#coord.onChange = () => this.#reconcileAll();
    this.#renewAt = opts.renewAt ?? 2 / 3;
    this.#retryMin = opts.retryMinMs ?? 5_000;
    this.#retryMax = opts.retryMaxMs ?? 3_600_000;
    this.#orders = opts.registry
      ? new Counter({
          name: 'gatehouse_acme_orders_total',
          help: 'ACME certificate orders by SDS secret name and result (success; failure; discarded: issued after this replica lost the lease, not stored)',
          labelNames: ['secret', 'result'],
          registers: [opts.registry],
        })
      : null;
    if (opts.registry && this.#coord.size()) {
      const coord = this.#coord;
      new Gauge({
        name: 'gatehouse_acme_secret_bytes',
        help: 'Bytes of data in the Secret gatehouse-acme as this replica last read it (Kubernetes limits a Secret to 1048576; new certificates are not ordered within 16 KiB of it)',
        registers: [opts.registry],
        collect() {
          const b = coord.size()?.bytes;
          if (b !== null && b !== undefined) this.set(b);
        },
      });
    }
  }

  /**
   * acme-client, loaded on the first order: it (with axios) costs ~26 MB of RSS, which gateways
   * without ACME issuers should not carry.
   */
  #lib(): Promise<typeof AcmeLib> {
    this.#acmeLib ??= import('acme-client').then(({ default: acme }) => {
      acme.setLogger((msg) => this.#log.debug({ acme: msg }, 'acme-client'));
      // acme-client retries each failed request 5 times over 75 s on its own; one quick retry, then
      // the order fails and our backoff (logged, counted) takes over.
      const settings = (acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number; retryDefaultDelay: number } }).acmeSettings;
      settings.retryMaxAttempts = 1;
      settings.retryDefaultDelay = 2;
      this.#applyTrust(acme);
      return acme;
    });
    return this.#acmeLib;
  }

  async ensure(name: string, source: AcmeSecretSource): Promise<ServerCertificate> {
    const key = JSON.stringify([source.directory_url, [...source.hosts].sort(), source.email ?? '', source.ca_file ?? '']);
    const existing = this.#managed.get(name);
    if (existing && existing.key === key) return existing.current;
    if (existing) this.#stop(existing);
    if (source.ca_file) this.#trust(source.ca_file);
    // The stored state first (Kubernetes: the Secret's first reading), so that a replica joining
    // serves the certificates the others issued from its first handshake.
    await (this.#started ??= this.#coord.start());
    const raced = this.#managed.get(name);
    if (raced && raced.key === key) return raced.current;

    const stored = this.#stored(name, source);
    const m: Managed = {
      name,
      source,
      key,
      current: stored ?? (await placeholder(source.hosts)),
      placeholder: !stored,
      timer: null,
      failures: 0,
      stopped: false,
      running: false,
    };
    const other = this.#managed.get(name);
    if (other && other.key === key) return other.current;
    if (other) this.#stop(other);
    this.#managed.set(name, m);
    if (stored) {
      this.#log.info({ secret: name, hosts: source.hosts, notAfter: stored.notAfter.toISOString(), from: this.#coord.where }, 'using the stored ACME certificate');
    } else {
      const who = this.#coord.leading ? '' : ' (ordered by the replica holding the lease)';
      this.#log.warn({ secret: name, hosts: source.hosts, directory: source.directory_url }, `no ACME certificate yet; serving a self-signed placeholder until one is issued${who}`);
    }
    this.#leading = this.#coord.leading;
    this.#reconcile(m);
    return m.current;
  }

  retain(names: ReadonlySet<string>): void {
    for (const m of [...this.#managed.values()]) if (!names.has(m.name)) this.#stop(m);
  }

  /** Stops ordering; with Kubernetes, releases the lease so that another replica takes over at once. */
  async close(): Promise<void> {
    for (const m of [...this.#managed.values()]) this.#stop(m);
    await this.#coord.close();
  }

  #stop(m: Managed): void {
    m.stopped = true;
    if (m.timer) clearTimeout(m.timer);
    m.timer = null;
    if (this.#managed.get(m.name) === m) this.#managed.delete(m.name);
  }

  #trust(file: string): void {
    if (this.#trusted.has(file)) return;
    this.#trusted.add(file);
    void this.#acmeLib?.then((acme) => this.#applyTrust(acme));
  }

  /** acme-client talks to the directory through one shared axios instance: trust our CA files there. */
  #applyTrust(acme: typeof AcmeLib): void {
    if (this.#trusted.size === 0) return;
    const ca = [...rootCertificates, ...[...this.#trusted].flatMap((f) => (existsSync(f) ? [readFileSync(f, 'utf8')] : []))];
    acme.axios.defaults.httpsAgent = new Agent({ ca });
  }

  /** The stored certificate for this name, if it was ordered for this directory and these hosts and is usable. */
  #stored(name: string, source: AcmeSecretSource): ServerCertificate | undefined {
    let s: StoredCertificate | undefined;
    try {
      s = this.#coord.certificate(name);
    } catch (e) {
      this.#log.warn({ secret: name, from: this.#coord.where, error: (e as Error).message }, 'stored ACME certificate not usable; ordering a new one');
      return undefined;
    }
    if (!s || s.directory !== source.directory_url || JSON.stringify([...s.hosts].sort()) !== JSON.stringify([...source.hosts].sort())) return undefined;
    const m = this.#managed.get(name);
    // Unchanged text: the certificate already parsed.
    if (m && !m.placeholder && m.current.certPem === s.certPem && m.current.keyPem === s.keyPem) return m.current;
    try {
      return parseServerCertificate(s.certPem, s.keyPem, `stored ACME certificate ${name} (${this.#coord.where})`, 'its key');
    } catch (e) {
      this.#log.warn({ secret: name, from: this.#coord.where, error: (e as Error).message }, 'stored ACME certificate not usable; ordering a new one');
      return undefined;
    }
  }

  #reconcileAll(): void {
    const leading = this.#coord.leading;
    if (leading !== this.#leading) {
      this.#leading = leading;
      if (this.#managed.size > 0) this.#log.info({ leading, certificates: this.#managed.size }, leading ? 'ACME: this replica orders and renews the certificates now' : 'ACME: this replica no longer orders; it serves what the others store');
    }
    for (const m of [...this.#managed.values()]) this.#reconcile(m);
  }

  /**
   * Serves what is stored when it is newer (another replica issued or renewed it); then, only if
   * this process may order: schedules the renewal of a stored certificate, stores again one this
   * process serves but the store lost, or orders a missing one.
   */
  #reconcile(m: Managed): void {
    if (m.stopped) return;
    const stored = this.#stored(m.name, m.source);
    if (stored && stored !== m.current && stored.hash !== m.current.hash) {
      m.current = stored;
      m.placeholder = false;
      this.#log.info({ secret: m.name, hosts: m.source.hosts, notAfter: stored.notAfter.toISOString(), from: this.#coord.where }, 'ACME certificate from the shared store; new handshakes use it');
      this.onUpdate(m.name);
    }
    if (!this.#coord.leading) {
      // Whoever holds the lease orders: nothing is scheduled here, a retry pending is dropped.
      if (m.timer) clearTimeout(m.timer);
      m.timer = null;
      m.failures = 0;
      return;
    }
    if (m.running || (m.timer && m.failures > 0)) return;
    if (stored) this.#scheduleRenewal(m);
    else if (!m.timer) this.#schedule(m, 0);
  }

  #schedule(m: Managed, delayMs: number): void {
    if (m.stopped) return;
    if (m.timer) clearTimeout(m.timer);
    const wait = Math.max(0, Math.min(delayMs, MAX_TIMER_MS));
    m.timer = setTimeout(() => {
      m.timer = null;
      if (wait < delayMs) this.#schedule(m, delayMs - wait);
      else void this.#order(m);
    }, wait);
    m.timer.unref();
  }

  #renewalDue(c: ServerCertificate): number {
    const from = new Date(c.leaf.validFrom).getTime();
    const to = c.notAfter.getTime();
    return from + (to - from) * this.#renewAt;
  }

  #scheduleRenewal(m: Managed): void {
    this.#schedule(m, this.#renewalDue(m.current) - Date.now());
  }

  async #order(m: Managed): Promise<void> {
    if (m.stopped || m.running || !this.#coord.leading) return;
    const { source, name } = m;
    // A certificate this process serves that the store lost (an emptied Secret): stored again, not ordered again.
    if (!m.placeholder && !this.#stored(name, source) && this.#renewalDue(m.current) > Date.now()) {
      m.running = true;
      try {
        await this.#coord.saveCertificate(name, { certPem: m.current.certPem, keyPem: m.current.keyPem, directory: source.directory_url, hosts: source.hosts, notAfter: m.current.notAfter.toISOString() });
        this.#log.info({ secret: name, to: this.#coord.where }, 'ACME certificate stored again (the store had lost it)');
        this.#scheduleRenewal(m);
      } catch (e) {
        this.#failed(m, e, false);
      } finally {
        m.running = false;
      }
      return;
    }
    const full = this.#coord.noRoomFor(name);
    if (full) {
      this.#failed(m, new Error(`not ordered: ${full}`), true);
      return;
    }
    m.running = true;
    const started = Date.now();
    let issued = false;
    try {
      this.#log.info({ secret: name, hosts: source.hosts, directory: source.directory_url }, m.placeholder ? 'ordering an ACME certificate' : 'renewing the ACME certificate');
      const acme = await this.#lib();
      const client = new acme.Client({ directoryUrl: source.directory_url, accountKey: await this.#accountKey(source.directory_url) });
      const [key, csr] = await acme.crypto.createCsr({ commonName: source.hosts[0]!, altNames: source.hosts }, await acme.crypto.createPrivateEcdsaKey());
      const chain = await client.auto({
        csr,
        ...(source.email ? { email: source.email } : {}),
        termsOfServiceAgreed: true,
        challengePriority: ['http-01'],
        // The directory checks the challenge itself; a local pre-check would need to know which
        // of our ports the world reaches as port 80.
        skipChallengeVerification: true,
        challengeCreateFn: async (_authz, challenge, keyAuthorization) => this.#coord.setChallenge(challenge.token, keyAuthorization),
        challengeRemoveFn: async (_authz, challenge) => this.#coord.deleteChallenge(challenge.token),
      });
      issued = true;
      const cert = parseServerCertificate(chain, key.toString(), `ACME certificate for ${source.hosts.join(', ')}`, 'its key');
      if (m.stopped) return;
      // Stored before it is served: a replica that lost the lease meanwhile writes nothing (NotLeadingError).
      await this.#coord.saveCertificate(name, { certPem: cert.certPem, keyPem: cert.keyPem, directory: source.directory_url, hosts: source.hosts, notAfter: cert.notAfter.toISOString() });
      m.current = cert;
      m.placeholder = false;
      m.failures = 0;
      this.#orders?.inc({ secret: name, result: 'success' });
      this.#log.info({ secret: name, hosts: source.hosts, notAfter: cert.notAfter.toISOString(), ms: Date.now() - started, to: this.#coord.where }, 'ACME certificate issued');
      this.#scheduleRenewal(m);
      this.onUpdate(name);
    } catch (e) {
      if (m.stopped) return;
      if (e instanceof NotLeadingError) {
        // Another replica holds the lease: it orders (this certificate, if issued, is not stored nor served).
        this.#orders?.inc({ secret: name, result: issued ? 'discarded' : 'failure' });
        this.#log.warn({ secret: name, hosts: source.hosts, error: e.message }, issued ? `ACME certificate issued after this replica lost the lease: discarded, not stored (${e.message})` : `ACME order stopped: this replica lost the lease (${e.message})`);
        if (m.timer) clearTimeout(m.timer);
        m.timer = null;
        return;
      }
      this.#failed(m, e, true);
    } finally {
      m.running = false;
    }
  }

  /** A failed order (or store): logged, counted, retried with exponential backoff. */
  #failed(m: Managed, e: unknown, count: boolean): void {
    m.failures++;
    const retryMs = Math.min(this.#retryMax, this.#retryMin * 2 ** (m.failures - 1));
    if (count) this.#orders?.inc({ secret: m.name, result: 'failure' });
    const message = (e as Error)?.message ?? String(e);
    this.#log.error({ secret: m.name, hosts: m.source.hosts, attempt: m.failures, retryInMs: retryMs, error: message }, `ACME order failed: ${message}`);
    this.#schedule(m, retryMs);
  }

  /** The account key of a directory: the stored one, else a new one, stored before it is used. */
  async #accountKey(directory: string): Promise<Buffer> {
    const stored = this.#coord.accountKey(directory);
    if (stored) return stored;
    const key = await (await this.#lib()).crypto.createPrivateEcdsaKey();
    await this.#coord.saveAccountKey(directory, key);
    this.#log.info({ directory, to: this.#coord.where }, 'created an ACME account key');
    return key;
  }
}

/** A self-signed certificate for the hosts, served until the directory issues the real one. */
async function placeholder(hosts: readonly string[]): Promise<ServerCertificate> {
  const x509 = await loadX509();
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: createHash('sha256').update(`${now}${hosts.join(',')}`).digest('hex').slice(0, 16),
    name: `CN=${hosts[0] ?? 'gatehouse'}, O=Gatehouse ACME placeholder`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 7 * 86_400_000),
    keys: keys as unknown as Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['keys'],
    signingAlgorithm: alg,
    extensions: [new x509.SubjectAlternativeNameExtension(hosts.map((h) => ({ type: 'dns' as const, value: h })))],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END PRIVATE KEY-----\n`;
  return parseServerCertificate(cert.toString('pem'), keyPem, 'ACME placeholder', 'its key');
}
