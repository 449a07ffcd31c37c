// Certificates from an ACME directory (acme-client) for the SIMPLE HTTPS servers of Gateways
// annotated `gatehouse.io/acme-directory`. HTTP-01 challenges are answered by the gateway's own
// plaintext HTTP listeners (acme-challenges.ts). The account key (one per directory) and the
// certificates live in the state directory (GATEHOUSE_STATE_DIR, default ./.gatehouse-state) and
// are reused across restarts; a certificate is renewed at 2/3 of its lifetime; failures are
// retried with exponential backoff, logged, and counted in `gatehouse_acme_orders_total`.
// Until the first certificate exists, a self-signed placeholder is served (and logged).
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type AcmeLib from 'acme-client';
import { createHash, webcrypto } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { join, resolve } from 'node:path';
import { rootCertificates } from 'node:tls';
import { Counter, type Registry } from 'prom-client';
import type { AcmeSecretSource } from '../controlplane/snapshot.js';
import type { Logger } from '../telemetry/log.js';
import { acmeChallenges } from './acme-challenges.js';
import { parseServerCertificate, type ServerCertificate } from './pem.js';
import type { AcmeProvider } from './secret-store.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

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
}

interface Managed {
  name: string;
  source: AcmeSecretSource;
  /** Identity of the request: directory, hosts, email; a change means a new certificate. */
  key: string;
  current: ServerCertificate;
  /** True while `current` is the self-signed placeholder. */
  placeholder: boolean;
  timer: NodeJS.Timeout | null;
  failures: number;
  stopped: boolean;
  running: boolean;
}

/** Longest setTimeout Node allows (~24.8 days); longer waits re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class AcmeManager implements AcmeProvider {
  readonly #log: Logger;
  readonly #dir: string;
  readonly #renewAt: number;
  readonly #retryMin: number;
  readonly #retryMax: number;
  readonly #orders: Counter<'secret' | 'result'> | null;
  readonly #managed = new Map<string, Managed>();
  readonly #trusted = new Set<string>();
  #acmeLib: Promise<typeof AcmeLib> | null = null;
  onUpdate: (name: string) => void = () => undefined;

  constructor(opts: AcmeManagerOptions) {
    this.#log = opts.log;
    this.#dir = opts.stateDir ?? stateDir();
    this.#renewAt = opts.renewAt ?? 2 / 3;
    this.#retryMin = opts.retryMinMs ?? 5_000;
    this.#retryMax = opts.retryMaxMs ?? 3_600_000;
    this.#orders = opts.registry
      ? new Counter({ name: 'gatehouse_acme_orders_total', help: 'ACME certificate orders by SDS secret name and result (success, failure)', labelNames: ['secret', 'result'], registers: [opts.registry] })
      : null;
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

    const stored = this.#loadStored(name, source);
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
    this.#managed.set(name, m);
    if (stored) {
      this.#log.info({ secret: name, hosts: source.hosts, notAfter: stored.notAfter.toISOString() }, 'using the stored ACME certificate');
      this.#scheduleRenewal(m);
    } else {
      this.#log.warn({ secret: name, hosts: source.hosts, directory: source.directory_url }, 'no ACME certificate yet; serving a self-signed placeholder until one is issued');
      this.#schedule(m, 0);
    }
    return m.current;
  }

  retain(names: ReadonlySet<string>): void {
    for (const m of [...this.#managed.values()]) if (!names.has(m.name)) this.#stop(m);
  }

  close(): void {
    for (const m of [...this.#managed.values()]) this.#stop(m);
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

  #scheduleRenewal(m: Managed): void {
    const c = m.current;
    const from = new Date(c.leaf.validFrom).getTime();
    const to = c.notAfter.getTime();
    const at = from + (to - from) * this.#renewAt;
    this.#schedule(m, at - Date.now());
  }

  async #order(m: Managed): Promise<void> {
    if (m.stopped || m.running) return;
    m.running = true;
    const { source, name } = m;
    const started = Date.now();
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
        challengeCreateFn: async (_authz, challenge, keyAuthorization) => void acmeChallenges.set(challenge.token, keyAuthorization),
        challengeRemoveFn: async (_authz, challenge) => void acmeChallenges.delete(challenge.token),
      });
      const cert = parseServerCertificate(chain, key.toString(), `ACME certificate for ${source.hosts.join(', ')}`, 'its key');
      if (m.stopped) return;
      this.#store(name, source, cert);
      m.current = cert;
      m.placeholder = false;
      m.failures = 0;
      this.#orders?.inc({ secret: name, result: 'success' });
      this.#log.info({ secret: name, hosts: source.hosts, notAfter: cert.notAfter.toISOString(), ms: Date.now() - started }, 'ACME certificate issued');
      this.#scheduleRenewal(m);
      this.onUpdate(name);
    } catch (e) {
      if (m.stopped) return;
      m.failures++;
      const retryMs = Math.min(this.#retryMax, this.#retryMin * 2 ** (m.failures - 1));
      this.#orders?.inc({ secret: name, result: 'failure' });
      this.#log.error({ secret: name, hosts: source.hosts, attempt: m.failures, retryInMs: retryMs, error: (e as Error)?.message ?? String(e) }, `ACME order failed: ${(e as Error)?.message ?? e}`);
      this.#schedule(m, retryMs);
    } finally {
      m.running = false;
    }
  }

  // ---- State directory -------------------------------------------------------------------------

  #ensureDir(...parts: string[]): string {
    const d = join(this.#dir, ...parts);
    mkdirSync(d, { recursive: true, mode: 0o700 });
    return d;
  }

  async #accountKey(directory: string): Promise<Buffer> {
    const dir = this.#ensureDir('accounts', createHash('sha256').update(directory).digest('hex').slice(0, 16));
    const file = join(dir, 'account.key');
    if (existsSync(file)) return readFileSync(file);
    const key = await (await this.#lib()).crypto.createPrivateEcdsaKey();
    writeAtomic(file, key);
    writeAtomic(join(dir, 'directory.txt'), `${directory}\n`);
    this.#log.info({ directory, file }, 'created an ACME account key');
    return key;
  }

  #certDir(name: string): string {
    return join(this.#dir, 'certs', name.replace(/^acme:\/\//, '').replace(/[^A-Za-z0-9._-]+/g, '_'));
  }

  #loadStored(name: string, source: AcmeSecretSource): ServerCertificate | undefined {
    const dir = this.#certDir(name);
    try {
      const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as { directory: string; hosts: string[] };
      if (meta.directory !== source.directory_url || JSON.stringify([...meta.hosts].sort()) !== JSON.stringify([...source.hosts].sort())) return undefined;
      const cert = parseServerCertificate(readFileSync(join(dir, 'cert.pem'), 'utf8'), readFileSync(join(dir, 'key.pem'), 'utf8'), `stored ACME certificate ${dir}`, 'its key');
      return cert;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.#log.warn({ secret: name, dir, error: (e as Error).message }, 'stored ACME certificate not usable; ordering a new one');
      return undefined;
    }
  }

  #store(name: string, source: AcmeSecretSource, cert: ServerCertificate): void {
    const dir = this.#ensureDir('certs', this.#certDir(name).slice(join(this.#dir, 'certs').length + 1));
    writeAtomic(join(dir, 'key.pem'), cert.keyPem);
    writeAtomic(join(dir, 'cert.pem'), cert.certPem);
    writeAtomic(join(dir, 'meta.json'), JSON.stringify({ directory: source.directory_url, hosts: source.hosts, notAfter: cert.notAfter.toISOString() }, null, 2));
  }
}

function writeAtomic(file: string, data: string | Buffer): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/** A self-signed certificate for the hosts, served until the directory issues the real one. */
async function placeholder(hosts: readonly string[]): Promise<ServerCertificate> {
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
