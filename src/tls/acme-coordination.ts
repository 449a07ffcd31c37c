// Where the ACME state lives and which process may order (src/tls/acme.ts orders): one interface,
// two implementations.
// - Files (`gatehouse run --config`): GATEHOUSE_STATE_DIR, this process alone; it always orders.
//   HTTP-01 answers are this process's own.
// - Kubernetes (`--kubernetes`, any number of replicas): the Lease and the Secret `gatehouse-acme`
//   in `--namespace`, worked by acme-lease.ts where the Kubernetes source runs (the configuration
//   thread: the API client is loaded there already). Only the lease holder orders and writes; every
//   replica serves the certificates the Secret holds, and answers the HTTP-01 challenges written
//   there - the directory's validation request reaches whichever replica the load balancer picks.
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../telemetry/log.js';
import { acmeChallenges } from './acme-challenges.js';
import { ACME_STATE_NAME, MAX_SECRET_BYTES, type AcmeHostEvent, type AcmeHostRequest, type AcmeLeaseSettings, type AcmeSecretState } from './acme-lease.js';

/** A certificate as it is stored, with what it was ordered for. */
export interface StoredCertificate {
  certPem: string;
  keyPem: string;
  directory: string;
  hosts: string[];
  /** ISO time, for people reading the store. */
  notAfter?: string;
}

/** A save refused because this process does not hold the lease (any more). */
export class NotLeadingError extends Error {}

export interface AcmeCoordination {
  /** For the logs: where the state is kept. */
  readonly where: string;
  /** May this process order and renew now (files: always; Kubernetes: it holds the lease and reads the Secret)? */
  readonly leading: boolean;
  /** Called when `leading` or the stored state changed (Kubernetes: another replica wrote the Secret). */
  onChange: () => void;
  /** Resolves once the stored state is known (or cannot be, after a bounded wait). */
  start(): Promise<void>;
  /** The stored certificate of an ACME secret name; throws when it is there but unreadable. */
  certificate(name: string): StoredCertificate | undefined;
  accountKey(directory: string): Buffer | undefined;
  saveAccountKey(directory: string, key: Buffer): Promise<void>;
  saveCertificate(name: string, cert: StoredCertificate): Promise<void>;
  /** Why one more certificate would not fit (Kubernetes: a Secret holds at most 1 MiB), or null. */
  noRoomFor(name: string): string | null;
  /** What the store may hold and holds now, in bytes, when it is limited (Kubernetes: the Secret); else null. */
  size(): { bytes: number | null; limit: number } | null;
  /** Makes an HTTP-01 answer reachable wherever the directory's request may arrive. */
  setChallenge(token: string, answer: string): Promise<void>;
  deleteChallenge(token: string): Promise<void>;
  close(): Promise<void>;
}

const accountId = (directory: string): string => createHash('sha256').update(directory).digest('hex').slice(0, 16);

// ---- files ----------------------------------------------------------------------------------------

/** GATEHOUSE_STATE_DIR: `accounts/<sha256(directory)[:16]>/account.key`, `certs/<ns>_<name>/{cert,key}.pem + meta.json`. */
export class FileAcmeCoordination implements AcmeCoordination {
  readonly #dir: string;
  onChange: () => void = () => undefined;

  constructor(dir: string) {
    this.#dir = dir;
  }

  get where(): string {
    return this.#dir;
  }

  get leading(): boolean {
    return true;
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  #ensureDir(...parts: string[]): string {
    const d = join(this.#dir, ...parts);
    mkdirSync(d, { recursive: true, mode: 0o700 });
    return d;
  }

  accountKey(directory: string): Buffer | undefined {
    const file = join(this.#dir, 'accounts', accountId(directory), 'account.key');
    return existsSync(file) ? readFileSync(file) : undefined;
  }

  async saveAccountKey(directory: string, key: Buffer): Promise<void> {
    const dir = this.#ensureDir('accounts', accountId(directory));
    writeAtomic(join(dir, 'account.key'), key);
    writeAtomic(join(dir, 'directory.txt'), `${directory}\n`);
  }

  #certDir(name: string): string {
    return join(this.#dir, 'certs', name.replace(/^acme:\/\//, '').replace(/[^A-Za-z0-9._-]+/g, '_'));
  }

  certificate(name: string): StoredCertificate | undefined {
    const dir = this.#certDir(name);
    try {
      const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as { directory: string; hosts: string[] };
      return { certPem: readFileSync(join(dir, 'cert.pem'), 'utf8'), keyPem: readFileSync(join(dir, 'key.pem'), 'utf8'), directory: meta.directory, hosts: meta.hosts };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`${dir}: ${(e as Error).message}`);
    }
  }

  async saveCertificate(name: string, c: StoredCertificate): Promise<void> {
    const dir = this.#certDir(name);
    this.#ensureDir('certs', dir.slice(join(this.#dir, 'certs').length + 1));
    writeAtomic(join(dir, 'key.pem'), c.keyPem);
    writeAtomic(join(dir, 'cert.pem'), c.certPem);
    writeAtomic(join(dir, 'meta.json'), JSON.stringify({ directory: c.directory, hosts: c.hosts, ...(c.notAfter ? { notAfter: c.notAfter } : {}) }, null, 2));
  }

  noRoomFor(): string | null {
    return null;
  }

  size(): null {
    return null;
  }

  async setChallenge(token: string, answer: string): Promise<void> {
    acmeChallenges.set(token, answer);
  }

  async deleteChallenge(token: string): Promise<void> {
    acmeChallenges.delete(token);
  }

  async close(): Promise<void> {}
}

function writeAtomic(file: string, data: string | Buffer): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

// ---- Kubernetes -----------------------------------------------------------------------------------

/**
 * The Secret's data keys: `account.<sha256(directory)[:16]>.key` (PEM) and `.url`;
 * `cert.<namespace>_<credentialName>.crt` (chain), `.key`, `.json` (directory, hosts, notAfter,
 * who issued it); `challenge.<token>` (HTTP-01 answers of the orders in progress).
 */
export function certKey(name: string): string {
  const id = name.replace(/^acme:\/\//, '').replace('/', '_');
  if (/^[A-Za-z0-9.-]+_[A-Za-z0-9.-]+$/.test(id) && id.length <= 200) return `cert.${id}`;
  // A name Kubernetes would not take as a key (characters, length): readable part plus a hash.
  return `cert.${id.replace(/[^A-Za-z0-9._-]+/g, '-').slice(0, 160)}-${createHash('sha256').update(name).digest('hex').slice(0, 12)}`;
}

const CHALLENGE_PREFIX = 'challenge.';

/**
 * Room kept for one more certificate when deciding whether to order: a chain of three
 * certificates, its key and the metadata stay well below it.
 */
export const CERTIFICATE_ROOM_BYTES = 16 * 1024;

/** How long an HTTP-01 answer written to the Secret is given to reach every replica's watch before the directory is told to look. */
export const CHALLENGE_SETTLE_MS = 1_000;

export interface KubeAcmeOptions {
  settings: AcmeLeaseSettings;
  /** Sends a request to where the Kubernetes source runs (the configuration thread). */
  send: (r: AcmeHostRequest) => void;
  log: Logger;
  /** How long start() waits for the Secret's first reading (default 5 s). */
  firstReadMs?: number;
}

/** The main thread's half of the Kubernetes coordination; acme-lease.ts is the other. */
export class KubeAcmeCoordination implements AcmeCoordination {
  readonly #o: KubeAcmeOptions;
  readonly #log: Logger;
  onChange: () => void = () => undefined;
  #started: Promise<void> | null = null;
  #firstRead: (() => void) | null = null;
  #leaseHeld = false;
  #state: AcmeSecretState | null = null;
  #seq = 0;
  readonly #pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  /** HTTP-01 answers taken from the Secret into acmeChallenges. */
  readonly #answers = new Map<string, string>();
  /** Tokens of this replica's own orders in progress. */
  readonly #mine = new Set<string>();

  constructor(o: KubeAcmeOptions) {
    this.#o = o;
    this.#log = o.log;
  }

  get where(): string {
    return `the Secret ${this.#o.settings.namespace}/${ACME_STATE_NAME}`;
  }

  get leading(): boolean {
    return this.#leaseHeld && this.#state?.status === 'ok';
  }

  /** The request sent to start the Kubernetes half (sent again if that side restarts). */
  get startRequest(): AcmeHostRequest {
    return { type: 'start', settings: this.#o.settings };
  }

  start(): Promise<void> {
    this.#started ??= new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.#firstRead = null;
        this.#log.warn({ secret: this.where }, `ACME: ${this.where} could not be read within ${(this.#o.firstReadMs ?? 5_000) / 1000} s; serving placeholders until it can`);
        resolve();
      }, this.#o.firstReadMs ?? 5_000);
      t.unref();
      this.#firstRead = () => {
        clearTimeout(t);
        this.#firstRead = null;
        resolve();
      };
      this.#o.send(this.startRequest);
    });
    return this.#started;
  }

  /** Events from the Kubernetes half. */
  handle(e: AcmeHostEvent): void {
    switch (e.type) {
      case 'acme-lease':
        this.#leaseHeld = e.leading;
        this.onChange();
        return;
      case 'acme-secret':
        this.#state = e.state;
        this.#syncChallenges();
        // "Not readable yet" is not a reading; missing or forbidden are (and are logged there).
        if (e.state.status !== 'unreachable') this.#firstRead?.();
        this.onChange();
        return;
      case 'acme-reply': {
        const p = this.#pending.get(e.id);
        if (!p) return;
        this.#pending.delete(e.id);
        if (e.error === undefined) p.resolve();
        else p.reject(e.lost ? new NotLeadingError(e.error) : new Error(e.error));
        return;
      }
      case 'acme-reset': {
        this.#leaseHeld = false;
        for (const p of this.#pending.values()) p.reject(new NotLeadingError(e.reason));
        this.#pending.clear();
        this.onChange();
        return;
      }
    }
  }

  /** Every replica answers the challenges the Secret holds. */
  #syncChallenges(): void {
    const data = this.#state?.status === 'ok' ? this.#state.data : {};
    const now = new Map<string, string>();
    for (const [k, v] of Object.entries(data)) if (k.startsWith(CHALLENGE_PREFIX)) now.set(k.slice(CHALLENGE_PREFIX.length), v);
    for (const token of this.#answers.keys()) {
      if (now.has(token)) continue;
      this.#answers.delete(token);
      acmeChallenges.delete(token);
    }
    for (const [token, answer] of now) {
      if (this.#answers.get(token) === answer) continue;
      this.#answers.set(token, answer);
      acmeChallenges.set(token, answer);
    }
  }

  #data(): Record<string, string> {
    return this.#state?.status === 'ok' ? this.#state.data : {};
  }

  certificate(name: string): StoredCertificate | undefined {
    const data = this.#data();
    const k = certKey(name);
    const certPem = data[`${k}.crt`];
    const keyPem = data[`${k}.key`];
    const meta = data[`${k}.json`];
    if (certPem === undefined || keyPem === undefined || meta === undefined) return undefined;
    try {
      const m = JSON.parse(meta) as { directory: string; hosts: string[] };
      return { certPem, keyPem, directory: m.directory, hosts: m.hosts };
    } catch (e) {
      throw new Error(`${this.where}, key ${k}.json: ${(e as Error).message}`);
    }
  }

  accountKey(directory: string): Buffer | undefined {
    const pem = this.#data()[`account.${accountId(directory)}.key`];
    return pem === undefined ? undefined : Buffer.from(pem);
  }

  #write(set: Record<string, string>, remove: string[] = []): Promise<void> {
    // Answers a former holder left behind (it lost the lease mid-order) go with any write.
    for (const k of Object.keys(this.#data())) if (k.startsWith(CHALLENGE_PREFIX) && !this.#mine.has(k.slice(CHALLENGE_PREFIX.length)) && !(k in set)) remove.push(k);
    const id = ++this.#seq;
    return new Promise<void>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#o.send({ type: 'write', id, set, remove });
    });
  }

  saveAccountKey(directory: string, key: Buffer): Promise<void> {
    const a = `account.${accountId(directory)}`;
    return this.#write({ [`${a}.key`]: key.toString('utf8'), [`${a}.url`]: directory });
  }

  saveCertificate(name: string, c: StoredCertificate): Promise<void> {
    const k = certKey(name);
    const meta = { directory: c.directory, hosts: c.hosts, ...(c.notAfter ? { notAfter: c.notAfter } : {}), issuedBy: this.#o.settings.identity, storedAt: new Date().toISOString() };
    return this.#write({ [`${k}.crt`]: c.certPem, [`${k}.key`]: c.keyPem, [`${k}.json`]: JSON.stringify(meta) });
  }

  noRoomFor(name: string): string | null {
    const s = this.#state;
    if (s?.status !== 'ok') return null;
    const k = certKey(name);
    let bytes = s.bytes;
    for (const suffix of ['.crt', '.key', '.json']) bytes -= Buffer.byteLength(s.data[`${k}${suffix}`] ?? '');
    if (bytes + CERTIFICATE_ROOM_BYTES <= MAX_SECRET_BYTES) return null;
    return `${this.where} holds ${s.bytes} bytes; one more certificate needs up to ${CERTIFICATE_ROOM_BYTES} and Kubernetes limits a Secret to ${MAX_SECRET_BYTES} bytes`;
  }

  size(): { bytes: number | null; limit: number } {
    return { bytes: this.#state?.status === 'ok' ? this.#state.bytes : null, limit: MAX_SECRET_BYTES };
  }

  async setChallenge(token: string, answer: string): Promise<void> {
    this.#mine.add(token);
    await this.#write({ [`${CHALLENGE_PREFIX}${token}`]: answer });
    // The other replicas learn it from their watch of the Secret: give it a moment to reach them.
    await new Promise((r) => setTimeout(r, CHALLENGE_SETTLE_MS));
    if (!this.leading) throw new NotLeadingError(`lost the Lease ${this.#o.settings.namespace}/${ACME_STATE_NAME} while the challenge was being published`);
  }

  async deleteChallenge(token: string): Promise<void> {
    this.#mine.delete(token);
    try {
      await this.#write({}, [`${CHALLENGE_PREFIX}${token}`]);
    } catch (err) {
      // Left behind only when the lease was lost; the next holder's writes do not depend on it.
      this.#log.debug({ token, err: (err as Error).message }, 'ACME: the challenge answer was not removed from the Secret');
    }
  }

  /** Releases the lease if held (bounded): another replica takes over at once. */
  async close(): Promise<void> {
    if (!this.#started) return;
    const id = ++this.#seq;
    await Promise.race([
      new Promise<void>((resolve) => {
        this.#pending.set(id, { resolve, reject: () => resolve() });
        this.#o.send({ type: 'stop', id });
      }),
      new Promise<void>((r) => setTimeout(r, 3_000).unref()),
    ]);
    this.#pending.delete(id);
  }
}
