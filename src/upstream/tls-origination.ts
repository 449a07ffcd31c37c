// TLS origination towards an upstream, per DestinationRule `tls` (as resolve.ts translates it into
// Envoy's UpstreamTlsContext): SIMPLE (a CA file, else the system CAs), MUTUAL (plus a client
// certificate), `sni`, `subjectAltNames`, `insecureSkipVerify`. One object per distinct setting,
// shared by the undici pools (HTTP/1.1) and the HTTP/2 sessions of the cluster's endpoints.
// Files are read when the object is made and re-read, for new connections, when they change on
// disk (checked at most once a second), so a rotated client certificate needs no reload.
// ISTIO_MUTUAL names its material over SDS instead (`default`, `ROOTCA`), and so does
// `credentialName` (`kubernetes://<name>`, `kubernetes://<name>-cacert`): it comes from the data
// plane's secret store (the mesh CA's current workload certificate, the Secrets of the current
// configuration, or SDS from a control plane) and is re-read the same way, so a rotated
// certificate or Secret is used by new connections while open ones keep theirs.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { ConnectionOptions, PeerCertificate } from 'node:tls';
import type { buildConnector } from 'undici';
import type { UpstreamTlsContext } from '../controlplane/snapshot.js';
import { loadUndici } from './undici-pool.js';

/** Envoy's client default: TLS 1.2 and later. */
const MIN_VERSION = 'TLSv1.2';
const RECHECK_MS = 1000;

/** Where SDS-named material comes from (the data plane's SecretStore). */
export interface SdsMaterial {
  certificate(name: string): { certPem: string; keyPem: string; hash: string } | undefined;
  ca(name: string): { caPem: string; hash: string } | undefined;
}

/**
 * A TLS setting that cannot be used (unreadable file, certificate that does not parse, key
 * mismatch). Its code makes it an UpstreamError of kind `tls` (503 UF), as Envoy reports an
 * unusable transport socket.
 */
export class TlsConfigError extends Error {
  readonly code = 'ERR_TLS_ORIGINATION_CONFIG';
}

export class TlsOrigination {
  /** Identifies the setting (equal settings share one object and one pool key). */
  readonly key: string;
  readonly #ctx: UpstreamTlsContext;
  /**
   * The host name of an upstream reached by address (a DNS-resolved endpoint, an original
   * destination): its SNI and the name its certificate must carry, whatever the request's Host.
   */
  readonly #host: string;
  readonly #files: string[];
  #stamp = '';
  #checkedAt = 0;
  #options: ConnectionOptions | null = null;
  #error: TlsConfigError | null = null;
  readonly #sds: SdsMaterial | undefined;

  constructor(ctx: UpstreamTlsContext, host = '', sds?: SdsMaterial) {
    this.#ctx = ctx;
    this.#sds = sds;
    this.#host = host ? sniOf(host) : '';
    this.key = this.#host ? `${JSON.stringify(ctx)}|host=${this.#host}` : JSON.stringify(ctx);
    const c = ctx.common_tls_context;
    const files: string[] = [];
    if (c.validation_context?.trusted_ca) files.push(c.validation_context.trusted_ca.filename);
    const pair = c.tls_certificates?.[0];
    if (pair) files.push(pair.certificate_chain.filename, pair.private_key.filename);
    this.#files = files;
    this.#refresh(true);
  }

  /** Why connections cannot be made with this setting, or null. */
  get error(): string | null {
    this.#refresh(false);
    return this.#error?.message ?? null;
  }

  /**
   * The SNI for a request: the DestinationRule's `sni`, else the request's host without its port
   * (Istio's auto_sni); '' for an IP literal, which SNI cannot carry.
   */
  serverName(requestHost: string): string {
    if (this.#ctx.sni) return this.#ctx.sni;
    if (this.#host) return this.#host;
    return sniOf(requestHost);
  }

  /** Options for `tls.connect` / `http2.connect` with the current files; throws TlsConfigError. */
  connectOptions(): ConnectionOptions {
    this.#refresh(false);
    if (this.#error) throw this.#error;
    return this.#options!;
  }

  /** An undici `connect` function: TLS with these options, the SNI chosen per request host. */
  undiciConnector(timeoutMs: number): buildConnector.connector {
    let built: buildConnector.connector | null = null;
    let builtFor: ConnectionOptions | null = null;
    return (opts, cb) => {
      let o: ConnectionOptions;
      try {
        o = this.connectOptions();
      } catch (err) {
        cb(err as Error, null);
        return;
      }
      if (built === null || o !== builtFor) {
        built = loadUndici().buildConnector({ ...o, timeout: timeoutMs, keepAlive: true, keepAliveInitialDelay: 60_000 } as buildConnector.BuildOptions);
        builtFor = o;
      }
      // undici passes the request's Host (without port) as `servername`, or null for IP literals.
      // An upstream reached by address presents its host name (Node then checks the certificate
      // against it, or against subjectAltNames when the rule lists them).
      const servername = this.#ctx.sni || this.#host || opts.servername || undefined;
      built({ ...opts, ...(servername ? { servername } : { servername: undefined }) } as buildConnector.Options, cb);
    };
  }

  #refresh(force: boolean): void {
    const now = Date.now();
    // Without usable options yet (a Secret arriving with the snapshot that made this cluster),
    // look again at every connection rather than failing for a second.
    if (!force && this.#options !== null && now - this.#checkedAt < RECHECK_MS) return;
    this.#checkedAt = now;
    let stamp = '';
    for (const f of this.#files) {
      try {
        const st = statSync(f);
        stamp += `${f}:${st.mtimeMs}:${st.size};`;
      } catch {
        stamp += `${f}:missing;`;
      }
    }
    const sds = sdsNames(this.#ctx);
    for (const n of sds.certs) stamp += `sds:${n}:${this.#sds?.certificate(n)?.hash ?? 'missing'};`;
    if (sds.ca) stamp += `sds-ca:${sds.ca}:${this.#sds?.ca(sds.ca)?.hash ?? 'missing'};`;
    if (!force && stamp === this.#stamp) return;
    this.#stamp = stamp;
    try {
      this.#options = buildOptions(this.#ctx, this.#sds);
      this.#error = null;
    } catch (err) {
      // Keep the last good options for a file being replaced; report when there never were any.
      if (this.#options === null) this.#error = err instanceof TlsConfigError ? err : new TlsConfigError((err as Error).message);
    }
  }
}

function sdsNames(ctx: UpstreamTlsContext): { certs: string[]; ca: string | undefined } {
  const c = ctx.common_tls_context;
  return { certs: (c.tls_certificate_sds_secret_configs ?? []).map((x) => x.name), ca: c.combined_validation_context?.validation_context_sds_secret_config.name };
}

function buildOptions(ctx: UpstreamTlsContext, sds: SdsMaterial | undefined): ConnectionOptions {
  const c = ctx.common_tls_context;
  if (c.tls_certificate_sds_secret_configs || c.combined_validation_context) return buildSdsOptions(ctx, sds);
  const vc = c.validation_context;
  const opts: ConnectionOptions = { minVersion: MIN_VERSION };
  if (vc?.trusted_ca) opts.ca = readCertificates(vc.trusted_ca.filename, 'caCertificates');
  const pair = c.tls_certificates?.[0];
  if (pair) {
    const cert = readCertificates(pair.certificate_chain.filename, 'clientCertificate');
    const key = readFile(pair.private_key.filename, 'privateKey');
    let keyObject;
    try {
      keyObject = createPrivateKey(key);
    } catch (err) {
      throw new TlsConfigError(`privateKey ${pair.private_key.filename}: not a PEM private key (${(err as Error).message})`);
    }
    if (!new X509Certificate(cert).checkPrivateKey(keyObject)) {
      throw new TlsConfigError(`privateKey ${pair.private_key.filename} does not match clientCertificate ${pair.certificate_chain.filename}`);
    }
    opts.cert = cert;
    opts.key = key;
  }
  if (ctx.insecure_skip_verify) {
    opts.rejectUnauthorized = false;
    opts.checkServerIdentity = () => undefined;
    return opts;
  }
  opts.rejectUnauthorized = true;
  const sans = vc?.match_subject_alt_names?.map((m) => m.exact) ?? [];
  if (sans.length > 0) {
    opts.checkServerIdentity = (_host, cert) => matchSubjectAltNames(cert, sans);
  } else if (ctx.sni) {
    // Istio validates the SAN against the SNI only when it chose the SNI itself (auto_sni with
    // auto_san_validation); an explicit `sni` without subjectAltNames checks the chain only.
    opts.checkServerIdentity = () => undefined;
  }
  // Otherwise Node's default check: the certificate must name the SNI host (auto_san_validation).
  return opts;
}

/**
 * SDS-named material: ISTIO_MUTUAL presents the workload certificate (`default`) and verifies the
 * server's chain against the mesh root (`ROOTCA`); `credentialName` presents the Secret's
 * certificate (MUTUAL) and verifies against its CA. The SANs checked are the rule's
 * subjectAltNames; without them an explicit `sni` (always set for ISTIO_MUTUAL, whose
 * `outbound_...` SNI is no host name) checks the chain only, and otherwise the certificate must
 * name the SNI host, as Istio's auto_san_validation.
 */
function buildSdsOptions(ctx: UpstreamTlsContext, sds: SdsMaterial | undefined): ConnectionOptions {
  const names = sdsNames(ctx);
  const opts: ConnectionOptions = { minVersion: MIN_VERSION };
  const certName = names.certs[0];
  if (certName) {
    const m = sds?.certificate(certName);
    if (!m) throw new TlsConfigError(`${describeSds(certName, 'certificate')} is not available in this process`);
    opts.cert = m.certPem;
    opts.key = m.keyPem;
  }
  if (ctx.insecure_skip_verify) {
    opts.rejectUnauthorized = false;
    opts.checkServerIdentity = () => undefined;
    return opts;
  }
  if (names.ca) {
    const ca = sds?.ca(names.ca);
    if (!ca) throw new TlsConfigError(`${describeSds(names.ca, 'ca')} is not available in this process`);
    opts.ca = ca.caPem;
  }
  opts.rejectUnauthorized = true;
  const sans = ctx.common_tls_context.combined_validation_context?.default_validation_context.match_subject_alt_names?.map((m) => m.exact) ?? [];
  if (sans.length > 0) opts.checkServerIdentity = (_host, cert) => matchSubjectAltNames(cert, sans);
  else if (ctx.sni) opts.checkServerIdentity = () => undefined;
  return opts;
}

/** An SDS name in messages: the mesh identity, or the Secret a credentialName names. */
function describeSds(name: string, part: 'certificate' | 'ca'): string {
  if (name.startsWith('kubernetes://')) {
    const secret = name.slice('kubernetes://'.length).replace(/-cacert$/, '');
    return part === 'ca' ? `the CA of credentialName secret "${secret}" (SDS "${name}")` : `the client certificate of credentialName secret "${secret}" (SDS "${name}")`;
  }
  return part === 'ca' ? `the mesh root certificate (SDS "${name}")` : `the mesh certificate (SDS "${name}")`;
}

function readFile(file: string, field: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new TlsConfigError(`${field} ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

function readCertificates(file: string, field: string): Buffer {
  const pem = readFile(file, field);
  const text = pem.toString('latin1');
  if (!text.includes('-----BEGIN CERTIFICATE-----')) throw new TlsConfigError(`${field} ${file}: no PEM certificate in the file`);
  try {
    new X509Certificate(pem);
  } catch (err) {
    throw new TlsConfigError(`${field} ${file}: the certificate does not parse (${(err as Error).message})`);
  }
  return pem;
}

/** Envoy's match_subject_alt_names with `exact` matchers: any SAN of the certificate equal to one listed. */
export function matchSubjectAltNames(cert: PeerCertificate, wanted: readonly string[]): Error | undefined {
  const sans = (cert.subjectaltname ?? '')
    .split(/,\s*/)
    .map((s) => s.slice(s.indexOf(':') + 1))
    .filter(Boolean);
  for (const w of wanted) {
    for (const s of sans) {
      if (s === w) return undefined;
      // A wildcard DNS SAN covers one label, as Envoy's DNS SAN matching allows.
      if (s.startsWith('*.') && w.endsWith(s.slice(1)) && !w.slice(0, w.length - s.length + 1).includes('.')) return undefined;
    }
  }
  const err = new Error(`the upstream certificate's subject alt names [${sans.join(', ')}] match none of [${wanted.join(', ')}]`) as Error & { code: string };
  err.code = 'ERR_TLS_CERT_ALTNAME_INVALID';
  return err;
}

/** SNI host name of an authority: port removed, '' for IP literals. */
export function sniOf(authority: string): string {
  if (authority.startsWith('[')) return '';
  const i = authority.lastIndexOf(':');
  const host = i >= 0 ? authority.slice(0, i) : authority;
  return /^\d{1,3}(?:\.\d{1,3}){3}$/.test(host) ? '' : host.toLowerCase();
}
