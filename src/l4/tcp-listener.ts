// An L4 listener (node:net): a Gateway TCP server (one tcp_proxy chain for every connection) or a
// TLS PASSTHROUGH / AUTO_PASSTHROUGH server (the chain picked by the ClientHello's SNI, TLS left
// to the upstream). A config change swaps the compiled chains and the clusters they name as one
// version: connections already proxied keep their upstream; only new connections see the new routes.
import { createServer, type Server, type Socket } from 'node:net';
import type { Listener } from '../controlplane/snapshot.js';
import type { RouteTable } from '../routing/route-table.js';
import type { Logger } from '../telemetry/log.js';
import { CompiledTcpProxy, proxyConnection, type L4Context } from './tcp-proxy.js';
import { CLIENT_HELLO_TIMEOUT_MS, peekClientHello, SniChains } from './tls-passthrough.js';

export type L4Mode = 'tcp' | 'tls-passthrough';

/** One config version of the listener: its filter chains and the clusters they name, swapped together. */
interface L4Version {
  readonly ctx: L4Context;
  /** TCP: the tcp_proxy of its one filter chain. */
  readonly tcp: CompiledTcpProxy | undefined;
  /** TLS passthrough: the filter chains by SNI. */
  readonly sni: SniChains;
}

/** Rejections of one reason are logged at most this often (the counter counts every one). */
const REJECT_LOG_INTERVAL_MS = 1000;
const NO_CHAINS = new SniChains([]);

export class L4Listener {
  readonly bind: string;
  readonly port: number;
  readonly mode: L4Mode;
  /** L4 listeners have no HTTP route table; kept so the data plane can treat listeners alike. */
  readonly routeName = '';
  table: RouteTable | undefined = undefined;
  #version: L4Version;
  #server: Server | null = null;
  #listening = false;
  readonly #sockets = new Set<Socket>();
  readonly #log: Logger;
  readonly #lastLog = new Map<string, { at: number; suppressed: number }>();
  /** For tests: the ClientHello wait. */
  helloTimeoutMs = CLIENT_HELLO_TIMEOUT_MS;

  constructor(opts: { bind: string; port: number; mode: L4Mode }, ctx: L4Context, config: Listener, log: Logger) {
    this.bind = opts.bind;
    this.port = opts.port;
    this.mode = opts.mode;
    this.#log = log;
    this.#version = this.#compile(config, ctx);
  }

  /** The current version's context (clusters, metrics). */
  get ctx(): L4Context {
    return this.#version.ctx;
  }

  /** The same filter chains with another version's clusters (DNS answers changed). */
  set ctx(ctx: L4Context) {
    this.#version = { ...this.#version, ctx };
  }

  get listening(): boolean {
    return this.#listening;
  }

  /** Connections open now (admin `/listeners` reports them as active). */
  get inflight(): number {
    return this.#sockets.size;
  }

  /** A new config version: filter chains and the clusters they name, in one swap. */
  update(config: Listener, ctx: L4Context): void {
    this.#version = this.#compile(config, ctx);
  }

  #compile(config: Listener, ctx: L4Context): L4Version {
    if (this.mode === 'tcp') {
      const f = config.filter_chains[0]?.filters.find((x) => x.name === 'envoy.filters.network.tcp_proxy');
      return { ctx, tcp: f && f.name === 'envoy.filters.network.tcp_proxy' ? new CompiledTcpProxy(f.typed_config) : undefined, sni: NO_CHAINS };
    }
    return { ctx, tcp: undefined, sni: new SniChains(config.filter_chains) };
  }

  listen(): Promise<void> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (sock) => this.#accept(sock));
    this.#server = server;
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(new Error(`port ${this.port}: ${err.message}`));
      server.once('error', onError);
      server.listen(this.port, this.bind, () => {
        server.off('error', onError);
        server.on('error', (err) => this.#log.error({ err, port: this.port }, 'L4 listener error'));
        this.#listening = true;
        resolve();
      });
    });
  }

  #accept(sock: Socket): void {
    this.#sockets.add(sock);
    sock.on('error', () => undefined);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.#sockets.delete(sock);
    };
    const hooks = {
      log: this.#log,
      reject: (reason: string, detail: string) => this.#reject(reason, detail, sock),
      done: release,
    };
    // A socket closed by a drain (or by either side) leaves the set even if no hook ran.
    sock.once('close', () => setImmediate(release));
    if (this.mode === 'tcp') {
      const v = this.#version;
      const route = v.tcp;
      if (!route) {
        sock.destroy();
        this.#reject('no_route', 'no filter chain', sock);
        return;
      }
      proxyConnection(sock, null, route, v.ctx, hooks);
      return;
    }
    peekClientHello(sock, this.helloTimeoutMs, (r) => {
      if (!r.ok) {
        sock.destroy();
        this.#reject(r.reason === 'closed' ? 'client_closed' : r.reason === 'timeout' ? 'hello_timeout' : r.reason === 'too_large' ? 'hello_too_large' : r.reason === 'not_tls' ? 'not_tls' : 'malformed_hello', r.detail, sock);
        return;
      }
      // Routed by the version current when the ClientHello arrived: its chains with its clusters.
      const v = this.#version;
      const route = v.sni.match(r.sni);
      if (!route) {
        sock.destroy();
        this.#reject(r.sni === null ? 'no_sni' : 'unknown_sni', r.sni === null ? 'ClientHello without server_name and no catch-all filter chain' : `no filter chain for SNI "${r.sni}"`, sock);
        return;
      }
      // An original-destination cluster (ServiceEntry resolution NONE) goes to the SNI name, on
      // the service port.
      proxyConnection(sock, r.head, route, v.ctx, r.sni !== null ? { ...hooks, authority: r.sni } : hooks);
    });
  }

  #reject(reason: string, detail: string, sock: Socket): void {
    this.ctx.metrics.l4Rejected(this.port, reason);
    const now = performance.now();
    const last = this.#lastLog.get(reason);
    if (last && now - last.at < REJECT_LOG_INTERVAL_MS) {
      last.suppressed++;
      return;
    }
    this.#lastLog.set(reason, { at: now, suppressed: 0 });
    this.#log.warn({ port: this.port, reason, remote: sock.remoteAddress, ...(last?.suppressed ? { suppressed: last.suppressed } : {}) }, `${this.mode === 'tcp' ? 'TCP' : 'TLS passthrough'} connection closed: ${detail}`);
  }

  /** Stops accepting; open connections get up to `drainMs` to finish, then are closed. */
  async close(drainMs: number): Promise<void> {
    const server = this.#server;
    this.#server = null;
    this.#listening = false;
    // server.close() only stops accepting; its callback would wait for every connection.
    server?.close();
    const deadline = Date.now() + drainMs;
    while (this.#sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }
}
