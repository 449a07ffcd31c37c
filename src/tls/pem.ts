// Parsing and checking PEM certificates, keys and CA bundles with node:crypto: the certificate
// chain parses, the key parses and belongs to the leaf, the leaf has not expired, a CA bundle
// holds at least one certificate. Errors say which part failed, for messages naming the field.
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';

export type CertPart = 'cert' | 'key' | 'ca';

export class CertError extends Error {
  readonly part: CertPart;
  constructor(part: CertPart, message: string) {
    super(message);
    this.part = part;
  }
}

/** A server certificate that passed the checks. */
export interface ServerCertificate {
  kind: 'cert';
  certPem: string;
  keyPem: string;
  leaf: X509Certificate;
  notAfter: Date;
  /** Content hash of certificate and key (rotation compares it). */
  hash: string;
}

export interface CaBundle {
  kind: 'ca';
  caPem: string;
  certs: X509Certificate[];
  hash: string;
}

export type Material = ServerCertificate | CaBundle;

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/** The PEM blocks of one type (`CERTIFICATE`) in a text, each with its armour. */
export function pemBlocks(text: string, type: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(BLOCK)) if (m[1] === type) out.push(m[0]);
  return out;
}

function short(e: unknown): string {
  return ((e as Error)?.message ?? String(e)).split('\n')[0]!.replace(/^error:[0-9A-F]+:[^:]*:[^:]*:/, '');
}

function parseCerts(part: CertPart, pem: string, what: string): X509Certificate[] {
  const blocks = pemBlocks(pem, 'CERTIFICATE');
  if (blocks.length === 0) throw new CertError(part, `${what} holds no PEM certificate`);
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (e) {
      throw new CertError(part, `${what} is not a valid certificate${blocks.length > 1 ? ` (#${i + 1} in the chain)` : ''}: ${short(e)}`);
    }
  });
}

/**
 * Checks a certificate chain and its key. `certWhat` / `keyWhat` name them in messages
 * (`secret "x" tls.crt`, `tls.key`). `now` in ms.
 */
export function parseServerCertificate(certPem: string, keyPem: string, certWhat: string, keyWhat: string, now = Date.now()): ServerCertificate {
  const chain = parseCerts('cert', certPem, certWhat);
  const leaf = chain[0]!;
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch (e) {
    throw new CertError('key', `${keyWhat} is not a valid private key: ${short(e)}`);
  }
  if (!leaf.checkPrivateKey(key)) throw new CertError('cert', `${certWhat} does not match ${keyWhat}`);
  const notAfter = new Date(leaf.validTo);
  if (notAfter.getTime() <= now) throw new CertError('cert', `${certWhat} expired on ${notAfter.toISOString()} (${subjectOf(leaf)})`);
  const hash = createHash('sha256').update(certPem).update('\0').update(keyPem).digest('hex').slice(0, 16);
  return { kind: 'cert', certPem, keyPem, leaf, notAfter, hash };
}

export function parseCaBundle(caPem: string, what: string): CaBundle {
  const certs = parseCerts('ca', caPem, what);
  return { kind: 'ca', caPem, certs, hash: createHash('sha256').update(caPem).digest('hex').slice(0, 16) };
}

export function subjectOf(c: X509Certificate): string {
  return c.subject.replace(/\n/g, ', ');
}
