// HTTPS listeners that uWS cannot serve run on node:http2 (NodeListener, which also speaks
// HTTP/1.1, WebSocket upgrades included, and h2 when ALPN offers it): h2 (the default ALPN),
// MUTUAL and OPTIONAL_MUTUAL servers (a client certificate is asked for, verified against the
// server's CA, and its SANs checked), and protocol versions other than TLS 1.2-1.3. One SecureContext per certificate, chosen by SNI as Envoy picks a filter chain;
// after the handshake each connection is held to its server's mode:
// - MUTUAL: a verified client certificate is required;
// - OPTIONAL_MUTUAL: no certificate is fine, one that does not verify is refused;
// - subjectAltNames: the client certificate must carry one of them.
// PeerAuthentication reaches this file already translated by resolve(): STRICT makes a chain
// MUTUAL (require_client_certificate), PERMISSIVE OPTIONAL_MUTUAL, DISABLE SIMPLE.
// Node applies protocol versions and ciphers from the server's default context to every
// handshake (the SNI switch comes after version selection), so those of the default server rule.
import { createSecureContext, type SecureContext, type SecureContextOptions, type TLSSocket } from 'node:tls';
import type http2 from 'node:http2';
import type { Logger } from '../telemetry/log.js';
import type { SecretStore } from '../tls/secret-store.js';
import { SniTable } from '../tls/sni.js';
import type { ServedListener, TlsBinding } from './listener.js';
import type { DataPlaneContext } from './exchange.js';
import { NodeListener } from './node-listener.js';
import { alpnOf, nodeTlsVersion, type TlsChainSpec } from './https.js';

export class NodeTlsBinding implements TlsBinding {
  readonly #h2: NodeListener;
  readonly #store: SecretStore;
  readonly #log: Logger;
  #sni: SniTable<TlsChainSpec>;
  #chains: TlsChainSpec[];
  /** One context per (certificate, CA, settings); rebuilt when a certificate changes. */
  #contexts = new Map<string, SecureContext>();

  constructor(opts: { bind: string; port: number; routeName: string }, ctx: DataPlaneContext, chains: TlsChainSpec[], store: SecretStore, log: Logger) {
    this.#store = store;
    this.#log = log;
    this.#sni = new SniTable(chains.map((c) => ({ names: c.names, value: c })));
    this.#chains = chains;
    const server = this.#serverOptions(chains);
    this.#h2 = new NodeListener({ ...opts, tls: server, acceptSecure: (s) => this.#accept(s) }, ctx);
    this.#h2.onError = (err) => log.error({ err, port: opts.port }, 'request handler failed; answered 500');
  }

  get listener(): ServedListener {
    return this.#h2;
  }

  update(chains: TlsChainSpec[]): void {
    this.#sni = new SniTable(chains.map((c) => ({ names: c.names, value: c })));
    this.#chains = chains;
    this.secretsChanged();
  }

  secretsChanged(): void {
    const all = this.#chains;
    const before = this.#contexts;
    this.#contexts = new Map();
    for (const c of all) {
      const k = this.#key(c);
      const old = k ? before.get(k) : undefined;
      if (k && old) this.#contexts.set(k, old);
    }
    const { SNICallback: _keep, ...rest } = this.#serverOptions(all);
    this.#h2.updateTls(rest);
  }

  hashes(): string[] {
    return [];
  }

  #key(c: TlsChainSpec): string | undefined {
    const cert = this.#store.certificate(c.certSecret);
    const ca = c.caSecret ? this.#store.ca(c.caSecret) : undefined;
    if (!cert || (c.caSecret && !ca)) return undefined;
    return [cert.hash, ca?.hash ?? '', c.minVersion ?? '', c.maxVersion ?? '', c.ciphers?.join(':') ?? ''].join('|');
  }

  #contextOptions(c: TlsChainSpec): SecureContextOptions | undefined {
    const cert = this.#store.certificate(c.certSecret);
    const ca = c.caSecret ? this.#store.ca(c.caSecret) : undefined;
    if (!cert || (c.caSecret && !ca)) return undefined;
    const min = nodeTlsVersion(c.minVersion) ?? 'TLSv1.2';
    const max = nodeTlsVersion(c.maxVersion) ?? 'TLSv1.3';
    return {
      cert: cert.certPem,
      key: cert.keyPem,
      ...(ca ? { ca: ca.caPem } : {}),
      minVersion: min,
      maxVersion: max,
      ...(c.ciphers ? { ciphers: c.ciphers.join(':') } : {}),
      // TLS 1.0/1.1 need OpenSSL's security level 0 for their SHA-1 signatures.
      ...(min === 'TLSv1' || min === 'TLSv1.1' ? { ciphers: `${c.ciphers?.join(':') ?? 'DEFAULT'}@SECLEVEL=0` } : {}),
    };
  }

  #context(c: TlsChainSpec): SecureContext | undefined {
    const k = this.#key(c);
    if (!k) return undefined;
    let ctx = this.#contexts.get(k);
    if (!ctx) {
      const o = this.#contextOptions(c);
      if (!o) return undefined;
      ctx = createSecureContext(o);
      this.#contexts.set(k, ctx);
    }
    return ctx;
  }

  #serverOptions(chains: readonly TlsChainSpec[]): http2.SecureServerOptions {
    const def = this.#sni.fallback;
    const base = def ? this.#contextOptions(def) : undefined;
    if (!def || !base) throw new Error('no certificate available for the default HTTPS server');
    const mutual = chains.some((c) => c.mode !== 'SIMPLE');
    return {
      ...base,
      requestCert: mutual,
      // Only when every server requires a certificate can the handshake itself refuse clients;
      // otherwise #accept holds each connection to its server's mode.
      rejectUnauthorized: chains.every((c) => c.mode === 'MUTUAL'),
      ALPNProtocols: alpnOf(chains),
      SNICallback: (name, cb) => {
        const c = this.#sni.match(name) ?? this.#sni.fallback;
        try {
          cb(null, c ? this.#context(c) : undefined);
        } catch (err) {
          cb(err as Error, undefined);
        }
      },
    };
  }

  #accept(socket: TLSSocket): boolean {
    const name = (socket as TLSSocket & { servername?: string | false }).servername;
    const c = this.#sni.match(name || undefined) ?? this.#sni.fallback;
    if (!c || c.mode === 'SIMPLE') return true;
    const cert = socket.getPeerX509Certificate();
    const refuse = (why: string): boolean => {
      this.#log.debug({ server: c.server, sni: name || '', remote: socket.remoteAddress, why }, 'client certificate refused');
      return false;
    };
    if (!cert) return c.mode === 'OPTIONAL_MUTUAL' ? true : refuse('no client certificate');
    if (!socket.authorized) return refuse(`client certificate not verified: ${String(socket.authorizationError)}`);
    if (c.subjectAltNames.length > 0) {
      const sans = sanValues(cert.subjectAltName);
      if (!sans.some((v) => c.subjectAltNames.includes(v))) return refuse(`no subjectAltName of the client certificate is accepted (${sans.join(', ')})`);
    }
    return true;
  }
}

/** `DNS:a.test, URI:spiffe://x, IP Address:1.2.3.4` → the values. */
export function sanValues(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName.split(/,\s*/).map((part) => {
    const v = part.slice(part.indexOf(':') + 1);
    return v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
  });
}
