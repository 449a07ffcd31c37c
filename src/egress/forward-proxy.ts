// The forward-proxy entry of an egress gateway (Gatehouse extension, Gateway annotation
// `gatehouse.io/forward-proxy: "true"`), for workloads that can only set HTTP(S)_PROXY:
// - absolute-form requests (`GET http://api.example.com/x HTTP/1.1`) are routed like any request
//   with that authority, through the port's route table, which resolve() extends with the
//   registry and a REGISTRY_ONLY / ALLOW_ANY catch-all;
// - CONNECT host:port opens a TCP tunnel, under the same policy: a registered host on a declared
//   port goes to its cluster's endpoints; a registered host on another port is refused (403); a
//   host not in the registry gets 502 under REGISTRY_ONLY (Istio's BlackHoleCluster) and is
//   tunnelled to its own address under ALLOW_ANY (PassthroughCluster).
// Every refusal is logged (rate-limited per host) and counted with the host named.
import type { Socket } from 'node:net';
import type { ForwardProxyConfig } from '../controlplane/snapshot.js';
import { clusterName, PASSTHROUGH_CLUSTER } from '../controlplane/snapshot.js';
import { hostMatches } from '../config/hosts.js';
import type { Logger } from '../telemetry/log.js';
import { CompiledTcpProxy, proxyConnection, type L4Context } from '../l4/tcp-proxy.js';

/** Istio's default TCP idle timeout for tunnels. */
const TUNNEL_IDLE_MS = 3_600_000;
const LOG_INTERVAL_MS = 1_000;

export interface ConnectTarget {
  host: string;
  port: number;
}

/** `host:port` of a CONNECT request target (IPv6 in brackets); undefined when malformed. */
export function parseConnectTarget(target: string): ConnectTarget | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(target);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  const host = m[1]!.toLowerCase();
  return { host: host.startsWith('[') ? host.slice(1, -1) : host, port };
}

export type ConnectDecision =
  | { kind: 'cluster'; cluster: string; host: string; port: number }
  | { kind: 'passthrough'; host: string; port: number }
  | { kind: 'refuse'; status: 403 | 502; reason: string };

type ConnectEntry = ForwardProxyConfig['connect'][number];

/** A config's CONNECT registry as lookups: exact hosts in a map, wildcards longest first. */
interface CompiledConnect {
  exact: Map<string, ConnectEntry>;
  wildcards: ConnectEntry[];
}

/** Compiled once per configuration object (snapshots are immutable), not per tunnel. */
const compiledConnect = new WeakMap<ForwardProxyConfig, CompiledConnect>();

function compileConnect(cfg: ForwardProxyConfig): CompiledConnect {
  let c = compiledConnect.get(cfg);
  if (c) return c;
  const exact = new Map<string, ConnectEntry>();
  const wildcards: ConnectEntry[] = [];
  for (const entry of cfg.connect) {
    if (entry.host.startsWith('*')) wildcards.push(entry);
    else if (!exact.has(entry.host)) exact.set(entry.host, entry);
  }
  // Stable: among wildcards of one length the first in the config wins, as before.
  wildcards.sort((a, b) => b.host.length - a.host.length);
  c = { exact, wildcards };
  compiledConnect.set(cfg, c);
  return c;
}

/** What the policy says about a CONNECT target. */
export function decideConnect(cfg: ForwardProxyConfig, t: ConnectTarget): ConnectDecision {
  // The most specific registered host: exact first, then the longest wildcard.
  const c = compileConnect(cfg);
  const best = c.exact.get(t.host) ?? c.wildcards.find((entry) => hostMatches(entry.host, t.host));
  if (best) {
    if (!best.ports.includes(t.port)) return { kind: 'refuse', status: 403, reason: `port ${t.port} of ${t.host} is not declared by its ServiceEntry (ports ${best.ports.join(', ')})` };
    return { kind: 'cluster', cluster: clusterName(t.port, '', best.host), host: t.host, port: t.port };
  }
  if (cfg.policy === 'ALLOW_ANY') return { kind: 'passthrough', host: t.host, port: t.port };
  return { kind: 'refuse', status: 502, reason: `${t.host} is not in the registry (outbound traffic policy REGISTRY_ONLY)` };
}

export class ForwardProxy {
  readonly #log: Logger;
  readonly #lastLog = new Map<string, number>();
  /** Called for every refusal (the data plane counts it). */
  onRefused: (host: string, status: number) => void = () => undefined;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Logs a refusal, at most once a second per host. */
  refused(host: string, port: number, status: number, reason: string): void {
    this.onRefused(host, status);
    const now = Date.now();
    const last = this.#lastLog.get(host) ?? 0;
    if (now - last < LOG_INTERVAL_MS) return;
    if (this.#lastLog.size > 1000) this.#lastLog.clear();
    this.#lastLog.set(host, now);
    this.#log.warn({ host, port, status }, `forward proxy refused ${host}:${port}: ${reason}`);
  }

  /** Handles a CONNECT request on `socket` (the HTTP/1.1 parser is done with it). */
  connect(cfg: ForwardProxyConfig, target: string, socket: Socket, head: Buffer, ctx: L4Context): void {
    socket.on('error', () => undefined);
    const t = parseConnectTarget(target);
    if (!t) {
      socket.end('HTTP/1.1 400 Bad Request\r\nserver: istio-envoy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    const d = decideConnect(cfg, t);
    if (d.kind === 'refuse') {
      this.refused(t.host, t.port, d.status, d.reason);
      const text = d.status === 403 ? 'Forbidden' : 'Bad Gateway';
      socket.end(`HTTP/1.1 ${d.status} ${text}\r\nserver: istio-envoy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
      return;
    }
    const cluster = d.kind === 'cluster' ? d.cluster : PASSTHROUGH_CLUSTER;
    const runtime = ctx.clusters.get(cluster);
    if (!runtime) {
      // A passthrough tunnel needs PassthroughCluster (resolve() adds it with the catch-all).
      this.refused(t.host, t.port, 503, `no cluster ${cluster}`);
      socket.end('HTTP/1.1 503 Service Unavailable\r\nserver: istio-envoy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    const route = new CompiledTcpProxy({ '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: cluster, cluster, idle_timeout: { seconds: TUNNEL_IDLE_MS / 1000, nanos: 0 } });
    // The tunnel is up once the upstream connects; until then the client waits for the answer.
    proxyConnection(socket, head.length > 0 ? head : null, route, ctx, {
      log: this.#log,
      reject: (reason, detail) => this.refused(t.host, t.port, 503, `${reason} ${detail}`),
      done: () => undefined,
      authority: `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`,
      connected: () => socket.write('HTTP/1.1 200 Connection Established\r\nserver: istio-envoy\r\n\r\n'),
      failed: () => socket.end('HTTP/1.1 503 Service Unavailable\r\nserver: istio-envoy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'),
    });
  }
}
