// SIMPLE HTTPS listeners on uWS: the SSLApp's own certificate is the default (the catch-all
// server's, else the first server's), every SNI name of every server is added with
// addServerName (uWS matches exact names and one-label `*.example.com`), and names that only a
// wildcard matches over several labels (Envoy semantics) are added on first sight from
// missingServerName, which uWS calls synchronously inside the handshake. Rotation: a changed
// certificate is removed and added again (new handshakes get it; open connections keep theirs).
import type uWS from 'uWebSockets.js';
import type { PrivateCertDir } from '../tls/cert-files.js';
import type { SecretStore } from '../tls/secret-store.js';
import { SniTable } from '../tls/sni.js';
import type { Logger } from '../telemetry/log.js';
import type { DataPlaneContext } from './exchange.js';
import type { TlsChainSpec } from './https.js';
import { UwsHttpListener } from './uws-listener.js';

/** Names added on first sight (multi-label wildcard matches) are bounded. */
const MAX_LAZY_NAMES = 10_000;

export class UwsTlsBinding {
  readonly listener: UwsHttpListener;
  readonly #store: SecretStore;
  readonly #dir: PrivateCertDir;
  readonly #log: Logger;
  #chains: TlsChainSpec[];
  #sni: SniTable<TlsChainSpec>;
  /** Server names added to the current app → the key (certificate hash, ciphers) they were added with. */
  readonly #added = new Map<string, string>();
  readonly #lazy = new Map<string, string>();
  #defaultKey: string;

  constructor(opts: { bind: string; port: number; routeName: string }, ctx: DataPlaneContext, chains: TlsChainSpec[], store: SecretStore, dir: PrivateCertDir, log: Logger) {
    this.#store = store;
    this.#dir = dir;
    this.#log = log;
    this.#chains = chains;
    this.#sni = new SniTable(chains.map((c) => ({ names: c.names, value: c })));
    const def = this.#sni.fallback;
    const ssl = def ? this.#options(def) : undefined;
    if (!def || !ssl) throw new Error(`no certificate available for the HTTPS servers on port ${opts.port}`);
    this.#defaultKey = this.#key(def)!;
    this.listener = new UwsHttpListener({ ...opts, scheme: 'https', ssl }, ctx);
    this.listener.onMissingServerName = (name) => this.#missing(name);
    this.#sync();
  }

  /** The chains of a new config version (same port, still uWS-capable). */
  update(chains: TlsChainSpec[]): void {
    this.#chains = chains;
    this.#sni = new SniTable(chains.map((c) => ({ names: c.names, value: c })));
    this.#sync();
  }

  /** Certificates changed (rotation, ACME): re-add what changed. */
  secretsChanged(): void {
    this.#sync();
  }

  /** Certificate hashes in use (their private files must stay). */
  hashes(): string[] {
    return this.#chains.map((c) => this.#store.certificate(c.certSecret)?.hash).filter((h): h is string => h !== undefined);
  }

  #key(c: TlsChainSpec): string | undefined {
    const m = this.#store.certificate(c.certSecret);
    return m ? `${m.hash}|${c.ciphers?.join(':') ?? ''}` : undefined;
  }

  #options(c: TlsChainSpec): uWS.AppOptions | undefined {
    const m = this.#store.certificate(c.certSecret);
    if (!m) return undefined;
    return { ...this.#dir.files(m), ...(c.ciphers ? { ssl_ciphers: c.ciphers.join(':') } : {}) };
  }

  #sync(): void {
    const l = this.listener;
    const def = this.#sni.fallback;
    const defKey = def ? this.#key(def) : undefined;
    if (def && defKey && defKey !== this.#defaultKey) {
      l.replaceDefaultCertificate(this.#options(def)!);
      this.#defaultKey = defKey;
      // The new app has no server names yet.
      this.#added.clear();
      this.#lazy.clear();
      this.#log.info({ port: l.port, server: def.server }, 'default certificate replaced; open connections keep the old one');
    }
    const desired = new Map<string, TlsChainSpec>();
    for (const name of this.#sni.exactNames) desired.set(name, this.#sni.match(name)!);
    // A wildcard pattern is served by the first server naming it.
    for (const c of this.#chains) {
      for (const raw of c.names ?? []) {
        const n = raw.toLowerCase();
        if (n.startsWith('*.') && !desired.has(n)) desired.set(n, c);
      }
    }
    for (const [name, key] of [...this.#added]) {
      const want = desired.get(name);
      if (want && this.#key(want) === key) continue;
      l.removeServerName(name);
      this.#added.delete(name);
    }
    for (const [name, key] of [...this.#lazy]) {
      const want = this.#sni.match(name);
      if (want && this.#key(want) === key) continue;
      l.removeServerName(name);
      this.#lazy.delete(name);
    }
    for (const [name, c] of desired) {
      if (this.#added.has(name)) continue;
      const key = this.#key(c);
      const options = this.#options(c);
      if (!key || !options) continue; // no good certificate yet: the default answers
      l.addServerName(name, options);
      this.#added.set(name, key);
    }
  }

  /** A server name uWS does not know: a wildcard matching several labels, or no server at all. */
  #missing(name: string): void {
    const c = this.#sni.match(name);
    if (!c || (c.names === null && c === this.#sni.fallback) || this.#lazy.size >= MAX_LAZY_NAMES) return;
    const key = this.#key(c);
    const options = this.#options(c);
    if (!key || !options || this.#added.has(name.toLowerCase())) return;
    this.listener.addServerName(name.toLowerCase(), options);
    this.#lazy.set(name.toLowerCase(), key);
  }
}
