// The mesh CA (Citadel's role in istiod): a root that signs short-lived workload certificates
// carrying a SPIFFE URI SAN, `spiffe://<trust domain>/ns/<ns>/sa/<sa>`. They are the gateway's
// own identity (ISTIO_MUTUAL origination), SDS `default` for xDS clients, and `gatehouse ca sign`
// output for tests and VMs.
//
// Why @peculiar/x509: workload certificates are EC P-256 like Istio's; node:crypto can make keys
// and verify certificates but cannot create them, and node-forge (the other candidate, pulled in
// by acme-client) handles RSA only and cannot even parse EC certificates. @peculiar/x509 builds
// certificates on node's webcrypto (~6 ms each).
//
// The root comes from GATEHOUSE_CA_CERT / GATEHOUSE_CA_KEY (PEM files; the cert file may hold the
// signing certificate followed by its chain up to the root), else from
// `<state dir>/mesh-ca/root-cert.pem` + `root-key.pem` (state dir as for ACME:
// GATEHOUSE_STATE_DIR, default ./.gatehouse-state), generated there on first use (10 years).
//
// @peculiar/x509 is imported on the first certificate made (issued or a root generated; see
// x509-lib.ts), not with this file: opening a stored root and its key needs node:crypto only.
import type { CaMetrics } from './ca-metrics.js';
import type * as x509 from '@peculiar/x509';
import { X509Certificate, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseDurationMs } from '../config/duration.js';
import type { Logger } from '../telemetry/log.js';
import { stateDir } from './acme.js';
import { loadX509 } from './x509-lib.js';
import { parseServerCertificate, pemBlocks, type ServerCertificate } from './pem.js';
import { DEFAULT_TRUST_DOMAIN, parseSpiffeId } from './spiffe.js';


export const CA_CERT_ENV = 'GATEHOUSE_CA_CERT';
export const CA_KEY_ENV = 'GATEHOUSE_CA_KEY';
/** Lifetime of workload certificates (`24h`, `10s`); Istio's default is 24 h. */
export const WORKLOAD_TTL_ENV = 'GATEHOUSE_WORKLOAD_CERT_TTL';
export const DEFAULT_WORKLOAD_TTL_MS = 24 * 3_600_000;
/** Istio caps workload certificates at 90 days (`MAX_WORKLOAD_CERT_TTL`). */
export const MAX_WORKLOAD_TTL_MS = 90 * 24 * 3_600_000;
const ROOT_TTL_MS = 10 * 365 * 24 * 3_600_000;
/** Issued certificates start a little in the past, for peers whose clocks lag. */
const BACKDATE_MS = 60_000;

type CryptoKeyT = webcrypto.CryptoKey;
type X509Key = Parameters<typeof x509.X509CertificateGenerator.create>[0] extends infer P ? (P extends { signingKey: infer K } ? K : never) : never;

const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const EC_SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;
const RSA_ALG = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as const;

/** A workload certificate with its key and the trust anchor, as the file names of Istio's agent. */
export interface IssuedCertificate {
  spiffeId: string;
  /** Leaf first, then the intermediates of the signing CA (`cert-chain.pem`). */
  certChainPem: string;
  /** PKCS#8 PEM (`key.pem`); '' when issued for a CSR (the key stays with the requester). */
  keyPem: string;
  /** `root-cert.pem`. */
  rootPem: string;
  notBefore: Date;
  notAfter: Date;
  /** When it was issued (ms); renewal is planned from here, not from the backdated notBefore. */
  issuedAt: number;
  serial: string;
}

export interface MeshCaOptions {
  /** Default: GATEHOUSE_STATE_DIR or ./.gatehouse-state. */
  stateDir?: string;
  /** Signing certificate (+ chain) and key files; default from GATEHOUSE_CA_CERT / GATEHOUSE_CA_KEY. */
  certFile?: string;
  keyFile?: string;
  /** Organisation of a generated root (Istio writes the trust domain). */
  trustDomain?: string;
  log?: Logger;
}

export class MeshCaError extends Error {}
/** A certificate signing request that cannot be read or is not signed by its own key. */
export class CsrParseError extends MeshCaError {}

export class MeshCa {
  /** The trust anchor (self-signed root) clients verify against. */
  readonly rootPem: string;
  readonly root: X509Certificate;
  /** Where the root came from: generated now, read from the state dir, or from the env files. */
  readonly source: 'generated' | 'stored' | 'files';
  /** The files the signing certificate and key live in. */
  readonly certFile: string;
  readonly keyFile: string;
  /** The signing certificate (PEM), parsed by @peculiar/x509 when the first certificate is issued. */
  readonly #signerPem: string;
  #signer: x509.X509Certificate | null = null;
  readonly #signerNotAfter: Date;
  readonly #signingKey: CryptoKeyT;
  readonly #signAlg: typeof EC_SIGN | typeof RSA_ALG;
  /** Intermediates between the leaf and the root (empty for a self-signed signing CA). */
  readonly #chainPem: string;

  private constructor(p: { rootPem: string; signerPem: string; signerNotAfter: Date; key: CryptoKeyT; alg: typeof EC_SIGN | typeof RSA_ALG; chainPem: string; source: MeshCa['source']; certFile: string; keyFile: string }) {
    this.rootPem = p.rootPem;
    this.root = new X509Certificate(p.rootPem);
    this.#signerPem = p.signerPem;
    this.#signerNotAfter = p.signerNotAfter;
    this.#signingKey = p.key;
    this.#signAlg = p.alg;
    this.#chainPem = p.chainPem;
    this.source = p.source;
    this.certFile = p.certFile;
    this.keyFile = p.keyFile;
  }

  /** Loads the CA from the env files or the state dir, generating a root there when absent. */
  static async open(opts: MeshCaOptions = {}): Promise<MeshCa> {
    const certFile = opts.certFile ?? process.env[CA_CERT_ENV];
    const keyFile = opts.keyFile ?? process.env[CA_KEY_ENV];
    if (certFile || keyFile) {
      if (!certFile || !keyFile) throw new MeshCaError(`the mesh CA needs both ${CA_CERT_ENV} and ${CA_KEY_ENV} (got only ${certFile ? CA_CERT_ENV : CA_KEY_ENV})`);
      return MeshCa.#fromFiles(certFile, keyFile, 'files');
    }
    const dir = join(opts.stateDir ?? stateDir(), 'mesh-ca');
    const cert = join(dir, 'root-cert.pem');
    const key = join(dir, 'root-key.pem');
    if (existsSync(cert) && existsSync(key)) return MeshCa.#fromFiles(cert, key, 'stored');
    const generated = await generateRoot(dir, opts.trustDomain ?? DEFAULT_TRUST_DOMAIN);
    const ca = await MeshCa.#fromFiles(cert, key, generated ? 'generated' : 'stored');
    if (generated) opts.log?.info({ dir, notAfter: ca.root.validTo }, 'generated the mesh root CA');
    return ca;
  }

  static async #fromFiles(certFile: string, keyFile: string, source: MeshCa['source']): Promise<MeshCa> {
    let certText: string;
    let keyText: string;
    try {
      certText = readFileSync(certFile, 'utf8');
      keyText = readFileSync(keyFile, 'utf8');
    } catch (e) {
      throw new MeshCaError(`cannot read the mesh CA: ${(e as Error).message}`);
    }
    const blocks = pemBlocks(certText, 'CERTIFICATE');
    if (blocks.length === 0) throw new MeshCaError(`${certFile} holds no PEM certificate`);
    let nodeSigner: X509Certificate;
    try {
      nodeSigner = new X509Certificate(blocks[0]!);
    } catch (e) {
      throw new MeshCaError(`${certFile}: not a certificate (${(e as Error).message})`);
    }
    if (!nodeSigner.ca) throw new MeshCaError(`${certFile}: not a CA certificate (basicConstraints CA:TRUE is missing)`);
    let keyObject;
    try {
      keyObject = createPrivateKey(keyText);
    } catch (e) {
      throw new MeshCaError(`${keyFile}: not a PEM private key (${(e as Error).message})`);
    }
    if (!nodeSigner.checkPrivateKey(keyObject)) throw new MeshCaError(`${keyFile} does not belong to ${certFile}`);
    const pkcs8 = keyObject.export({ format: 'der', type: 'pkcs8' });
    let key: CryptoKeyT;
    let alg: typeof EC_SIGN | typeof RSA_ALG;
    if (keyObject.asymmetricKeyType === 'ec') {
      if (keyObject.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new MeshCaError(`${keyFile}: only P-256 EC keys are supported`);
      key = await webcrypto.subtle.importKey('pkcs8', pkcs8, EC_ALG, false, ['sign']);
      alg = EC_SIGN;
    } else if (keyObject.asymmetricKeyType === 'rsa') {
      key = await webcrypto.subtle.importKey('pkcs8', pkcs8, RSA_ALG, false, ['sign']);
      alg = RSA_ALG;
    } else {
      throw new MeshCaError(`${keyFile}: unsupported key type ${keyObject.asymmetricKeyType}`);
    }
    // The trust anchor is the last certificate of the file; everything between the signer and
    // a self-signed root travels in each workload's chain.
    const rootPem = `${blocks[blocks.length - 1]!}\n`;
    const last = new X509Certificate(rootPem);
    const chain = blocks.slice(0, last.checkIssued(last) ? blocks.length - 1 : blocks.length);
    const chainPem = blocks.length === 1 ? '' : chain.map((b) => `${b}\n`).join('');
    return new MeshCa({ rootPem, signerPem: blocks[0]!, signerNotAfter: new Date(nodeSigner.validTo), key, alg, chainPem, source, certFile, keyFile });
  }

  /**
   * A workload certificate for `spiffeId`, valid for `ttlMs` (default 24 h, at most 90 days).
   * With `csrPem` the requester's key is certified (the CSR's signature is checked; its subject
   * and SANs are ignored, as Istio's CA ignores them); otherwise a P-256 key is made here.
   */
  async issue(opts: { spiffeId: string; ttlMs?: number; csrPem?: string; now?: number }): Promise<IssuedCertificate> {
    const m = this.metrics;
    if (!m) return this.#issue(opts);
    m.received();
    try {
      const c = await this.#issue(opts);
      m.issued();
      return c;
    } catch (err) {
      if (err instanceof CsrParseError) m.parseError();
      else m.signError(err instanceof MeshCaError ? 'invalid-request' : 'signing');
      throw err;
    }
  }

  /** Citadel's metrics, counted by issue() once set (the gateway sets them; `ca sign` does not). */
  metrics: CaMetrics | null = null;

  /** When the signing certificate expires (the end of every chain it signs). */
  get signerNotAfter(): Date {
    return new Date(this.#signerNotAfter);
  }

  async #issue(opts: { spiffeId: string; ttlMs?: number; csrPem?: string; now?: number }): Promise<IssuedCertificate> {
    if (!parseSpiffeId(opts.spiffeId)) throw new MeshCaError(`"${opts.spiffeId}" is not a workload identity spiffe://<trust domain>/ns/<namespace>/sa/<service account>`);
    const ttl = opts.ttlMs ?? DEFAULT_WORKLOAD_TTL_MS;
    if (!(ttl > 0) || ttl > MAX_WORKLOAD_TTL_MS) throw new MeshCaError(`the certificate lifetime must be between 1 ms and 90 days, got ${ttl} ms`);
    const now = opts.now ?? Date.now();
    const x509 = await loadX509();
    const signer = (this.#signer ??= new x509.X509Certificate(this.#signerPem));
    let publicKey: x509.PublicKey | CryptoKeyT;
    let keyPem = '';
    if (opts.csrPem) {
      let csr: x509.Pkcs10CertificateRequest;
      try {
        csr = new x509.Pkcs10CertificateRequest(opts.csrPem);
      } catch (e) {
        throw new CsrParseError(`not a PEM certificate signing request: ${(e as Error).message}`);
      }
      if (!(await csr.verify())) throw new CsrParseError('the certificate signing request is not signed by its own key');
      publicKey = csr.publicKey;
    } else {
      const pair = (await webcrypto.subtle.generateKey({ ...EC_ALG }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      publicKey = pair.publicKey;
      keyPem = toPem('PRIVATE KEY', Buffer.from(await webcrypto.subtle.exportKey('pkcs8', pair.privateKey)));
    }
    const notBefore = new Date(now - Math.min(BACKDATE_MS, ttl));
    const notAfter = new Date(Math.min(now + ttl, this.#signerNotAfter.getTime()));
    const serial = serialNumber();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      // Istio's workload certificates have an empty subject; the identity is the SAN (critical).
      subject: '',
      issuer: signer.subject,
      notBefore,
      notAfter,
      publicKey: publicKey as Parameters<typeof x509.X509CertificateGenerator.create>[0]['publicKey'],
      signingKey: this.#signingKey as unknown as X509Key,
      signingAlgorithm: this.#signAlg,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: opts.spiffeId }], true),
        await x509.AuthorityKeyIdentifierExtension.create(signer.publicKey),
      ],
    });
    return {
      spiffeId: opts.spiffeId,
      certChainPem: `${cert.toString('pem')}\n${this.#chainPem}`,
      keyPem,
      rootPem: this.rootPem,
      notBefore,
      notAfter,
      issuedAt: now,
      serial,
    };
  }
}

/** Generates a root in `dir`; false when another process put one there first. */
async function generateRoot(dir: string, trustDomain: string): Promise<boolean> {
  const x509 = await loadX509();
  const keys = (await webcrypto.subtle.generateKey({ ...EC_ALG }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `O=${trustDomain.replace(/[,+="\\<>;#]/g, '_')}, CN=Gatehouse mesh root CA`,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + ROOT_TTL_MS),
    keys: keys as unknown as Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['keys'],
    signingAlgorithm: EC_SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as unknown as Parameters<typeof x509.SubjectKeyIdentifierExtension.create>[0]),
    ],
  });
  const keyPem = toPem('PRIVATE KEY', Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)));
  // Written to a fresh folder that is then renamed into place: two processes starting at once
  // both generate, one wins, the other reads the winner's root.
  mkdirSync(dirname(dir), { recursive: true, mode: 0o700 });
  const tmp = `${dir}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  mkdirSync(tmp, { mode: 0o700 });
  writeFileSync(join(tmp, 'root-cert.pem'), `${cert.toString('pem')}\n`);
  writeFileSync(join(tmp, 'root-key.pem'), keyPem, { mode: 0o600 });
  chmodSync(join(tmp, 'root-key.pem'), 0o600);
  try {
    renameSync(tmp, dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
    if (!existsSync(join(dir, 'root-cert.pem')) || !existsSync(join(dir, 'root-key.pem'))) {
      throw new MeshCaError(`${dir} exists but lacks root-cert.pem / root-key.pem; remove it or set ${CA_CERT_ENV} and ${CA_KEY_ENV}`);
    }
    return false;
  }
  return true;
}

function serialNumber(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f || 0x01;
  return b.toString('hex');
}

function toPem(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
}

/** The workload certificate lifetime from GATEHOUSE_WORKLOAD_CERT_TTL, else 24 h. */
export function workloadTtlMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env[WORKLOAD_TTL_ENV];
  if (!v) return DEFAULT_WORKLOAD_TTL_MS;
  const ms = parseDurationMs(v);
  if (ms === undefined || ms <= 0 || ms > MAX_WORKLOAD_TTL_MS) throw new MeshCaError(`${WORKLOAD_TTL_ENV}="${v}" must be a duration such as 24h or 10s, at most 90 days`);
  return ms;
}

/** An issued certificate with its key, checked like any served certificate (for the secret store). */
export function asServerCertificate(c: IssuedCertificate): ServerCertificate {
  return parseServerCertificate(c.certChainPem, c.keyPem, `workload certificate ${c.spiffeId}`, 'its key');
}

/**
 * Workload certificates by identity, issued on first request and re-issued once `renewAt` of
 * their lifetime has passed (SDS clients re-fetch on push). Concurrent requests for one identity
 * share one issuance.
 */
export class WorkloadCertificates {
  readonly #ca: MeshCa;
  readonly #ttl: number;
  readonly #renewAt: number;
  readonly #cache = new Map<string, IssuedCertificate>();
  readonly #pending = new Map<string, Promise<IssuedCertificate>>();
  /** At most this many identities are kept (oldest dropped). */
  readonly #max: number;

  constructor(ca: MeshCa, opts: { ttlMs?: number; renewAt?: number; max?: number } = {}) {
    this.#ca = ca;
    this.#ttl = opts.ttlMs ?? DEFAULT_WORKLOAD_TTL_MS;
    this.#renewAt = opts.renewAt ?? 0.8;
    this.#max = opts.max ?? 10_000;
  }

  get ca(): MeshCa {
    return this.#ca;
  }

  get ttlMs(): number {
    return this.#ttl;
  }

  /** The cached certificate while it is fresh (before `renewAt` of its lifetime). */
  cached(spiffeId: string, now = Date.now()): IssuedCertificate | undefined {
    const c = this.#cache.get(spiffeId);
    return c && now < this.renewTime(c) ? c : undefined;
  }

  /** The last certificate issued for an identity while it has not expired. */
  current(spiffeId: string, now = Date.now()): IssuedCertificate | undefined {
    const c = this.#cache.get(spiffeId);
    return c && now < c.notAfter.getTime() ? c : undefined;
  }

  /** When a certificate should be replaced. */
  renewTime(c: IssuedCertificate): number {
    return c.issuedAt + (c.notAfter.getTime() - c.issuedAt) * this.#renewAt;
  }

  async get(spiffeId: string): Promise<IssuedCertificate> {
    const c = this.cached(spiffeId);
    if (c) return c;
    let p = this.#pending.get(spiffeId);
    if (!p) {
      p = this.#ca.issue({ spiffeId, ttlMs: this.#ttl }).finally(() => this.#pending.delete(spiffeId));
      this.#pending.set(spiffeId, p);
      void p.then(
        (issued) => {
          this.#cache.delete(spiffeId);
          this.#cache.set(spiffeId, issued);
          if (this.#cache.size > this.#max) this.#cache.delete(this.#cache.keys().next().value!);
        },
        () => undefined,
      );
    }
    return p;
  }
}

/**
 * The gateway's own workload certificate: issued at start, replaced at 80% of its lifetime;
 * `onRotate` tells the data plane (new upstream connections then present the new one).
 */
export class GatewayIdentity {
  readonly spiffeId: string;
  readonly #certs: WorkloadCertificates;
  readonly #log: Logger | undefined;
  #current: IssuedCertificate | null = null;
  #server: ServerCertificate | null = null;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  #failures = 0;
  onRotate: () => void = () => undefined;

  constructor(certs: WorkloadCertificates, spiffeId: string, log?: Logger) {
    this.#certs = certs;
    this.spiffeId = spiffeId;
    this.#log = log;
  }

  get ca(): MeshCa {
    return this.#certs.ca;
  }

  /** The current certificate (null before `start`). */
  get current(): IssuedCertificate | null {
    return this.#current;
  }

  /** The current certificate as served material. */
  get certificate(): ServerCertificate | null {
    return this.#server;
  }

  async start(): Promise<void> {
    await this.#renew();
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  async #renew(): Promise<void> {
    if (this.#closed) return;
    try {
      const issued = await this.#certs.ca.issue({ spiffeId: this.spiffeId, ttlMs: this.#certs.ttlMs });
      if (this.#closed) return;
      const rotated = this.#current !== null;
      this.#current = issued;
      this.#server = asServerCertificate(issued);
      this.#failures = 0;
      this.#log?.[rotated ? 'info' : 'debug']({ spiffeId: this.spiffeId, serial: issued.serial, notAfter: issued.notAfter.toISOString() }, rotated ? 'workload certificate rotated' : 'workload certificate issued');
      this.#schedule(this.#certs.renewTime(issued) - Date.now());
      if (rotated) this.onRotate();
    } catch (e) {
      if (this.#current === null) throw e;
      this.#failures++;
      const retry = Math.min(60_000, 1000 * 2 ** (this.#failures - 1));
      this.#log?.error({ spiffeId: this.spiffeId, err: (e as Error).message, retryInMs: retry }, 'workload certificate rotation failed');
      this.#schedule(retry);
    }
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#renew(), Math.max(0, Math.min(ms, 2 ** 31 - 1)));
    this.#timer.unref();
  }
}
