// A snapshot Secret (inline PEM or files) → checked certificate material. ACME secrets have no
// material of their own: the ACME manager provides it.
import { readFileSync } from 'node:fs';
import type { DataSource, Secret } from '../controlplane/snapshot.js';
import { CertError, parseCaBundle, parseServerCertificate, type CertPart, type Material } from './pem.js';

export interface Names {
  cert: string;
  key: string;
  ca: string;
}

/** How a secret's parts are named in messages when the config gives no better name. */
export function defaultNames(secret: Secret): Names {
  const t = secret.tls_certificate;
  const v = secret.validation_context;
  return {
    cert: t?.certificate_chain.filename ? `certificate ${t.certificate_chain.filename}` : `secret ${JSON.stringify(secret.name)} certificate`,
    key: t?.private_key.filename ? `private key ${t.private_key.filename}` : 'its private key',
    ca: v?.trusted_ca.filename ? `CA certificates ${v.trusted_ca.filename}` : `secret ${JSON.stringify(secret.name)} CA`,
  };
}

function read(part: CertPart, src: DataSource, what: string): string {
  if (src.inline_string !== undefined) return src.inline_string;
  if (src.filename === undefined) throw new CertError(part, `${what} has no data`);
  try {
    return readFileSync(src.filename, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a folder' : ((e as Error).message ?? String(e));
    throw new CertError(part, `cannot read ${what}: ${why}`);
  }
}

/** Loads and checks a secret; throws CertError. Not for ACME secrets. */
export function loadSecret(secret: Secret, names: Names = defaultNames(secret), now = Date.now()): Material {
  const t = secret.tls_certificate;
  if (t) {
    const certPem = read('cert', t.certificate_chain, names.cert);
    const keyPem = read('key', t.private_key, names.key);
    return parseServerCertificate(certPem, keyPem, names.cert, names.key, now);
  }
  const v = secret.validation_context;
  if (v) return parseCaBundle(read('ca', v.trusted_ca, names.ca), names.ca);
  throw new CertError('cert', `secret ${JSON.stringify(secret.name)} holds neither a certificate nor CA certificates`);
}

/** The files a secret is read from (watched for rotation). */
export function secretFiles(secret: Secret): string[] {
  const out: string[] = [];
  const add = (d: DataSource | undefined): void => {
    if (d?.filename) out.push(d.filename);
  };
  add(secret.tls_certificate?.certificate_chain);
  add(secret.tls_certificate?.private_key);
  add(secret.validation_context?.trusted_ca);
  return out;
}
