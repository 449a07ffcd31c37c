// The admin port (Envoy's 15000 role): readiness, config_dump, Prometheus, clusters, listeners,
// xDS sync state. Off the hot path, so plain node:http.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Secret, Snapshot } from '../controlplane/snapshot.js';
import type { Registry } from 'prom-client';

export interface AdminSources {
  ready(): boolean;
  snapshot(): Snapshot | null;
  registry: Registry;
  clusters(): ClusterRow[] | Promise<ClusterRow[]>;
  listeners(): ListenerRow[] | Promise<ListenerRow[]>;
  syncz(): unknown;
  /** Prometheus text from elsewhere than `registry` (`--workers N`: merged over the workers). */
  prometheus?: () => Promise<string>;
  /** `--workers N`: per-worker state and request counts. */
  workers?: () => Promise<unknown>;
}

type ListenerRow = { name: string; address: string; protocol: string; route_config: string; active_requests: number };

interface ClusterRow {
  name: string;
  lb_policy: string;
  endpoints: Array<{ address: string; weight: number; active: number; labels: Record<string, string>; health_flags?: string; ejections?: number }>;
}

const TYPE = 'type.googleapis.com/envoy.admin.v3.';

/** A secret as config_dump shows it: Envoy prints `[redacted]` in place of private keys. */
function redactSecret(secret: Secret): Secret {
  const t = secret.tls_certificate;
  if (!t) return secret;
  return { ...secret, tls_certificate: { certificate_chain: t.certificate_chain, private_key: t.private_key.filename ? { filename: t.private_key.filename } : { inline_string: '[redacted]' } } };
}

/** Envoy-shaped config dump of a snapshot (secrets without private keys). */
export function configDump(s: Snapshot | null): unknown {
  const version_info = s?.version ?? '';
  return {
    configs: [
      { '@type': `${TYPE}BootstrapConfigDump`, bootstrap: { node: { id: 'gatehouse', user_agent_name: 'gatehouse' } } },
      {
        '@type': `${TYPE}ListenersConfigDump`,
        version_info,
        dynamic_listeners: (s?.listeners ?? []).map((listener) => ({ name: listener.name, active_state: { version_info, listener } })),
      },
      {
        '@type': `${TYPE}ClustersConfigDump`,
        version_info,
        dynamic_active_clusters: [...(s?.clusters.values() ?? [])].map((cluster) => ({ version_info, cluster })),
      },
      {
        '@type': `${TYPE}RoutesConfigDump`,
        dynamic_route_configs: [...(s?.routes.values() ?? [])].map((route_config) => ({ version_info, route_config })),
      },
      {
        '@type': `${TYPE}EndpointsConfigDump`,
        dynamic_endpoint_configs: [...(s?.endpoints.values() ?? [])].map((endpoint_config) => ({ version_info, endpoint_config })),
      },
      {
        '@type': `${TYPE}SecretsConfigDump`,
        dynamic_active_secrets: [...(s?.secrets?.values() ?? [])].map((secret) => ({ name: secret.name, version_info, secret: redactSecret(secret) })),
      },
      // Envoy has no dump type for it: what the Telemetry API resolved to (access logs, metric
      // overrides, tracing), shown when the Telemetry API is in use (else the mesh config decides).
      ...(s?.telemetry?.api ? [{ '@type': 'type.googleapis.com/gatehouse.admin.TelemetryConfigDump', version_info, telemetry: s.telemetry }] : []),
    ],
  };
}

function send(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-cache' });
  res.end(body);
}

export class AdminServer {
  readonly #server: Server;
  readonly #sources: AdminSources;

  constructor(sources: AdminSources) {
    this.#sources = sources;
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) send(res, 500, `${(err as Error)?.message ?? err}\n`);
        else res.destroy();
      });
    });
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject);
        resolve((this.#server.address() as AddressInfo).port);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const json = url.searchParams.get('format') === 'json';
    const s = this.#sources;
    switch (url.pathname) {
      case '/healthz/ready':
      case '/ready':
        return s.ready() ? send(res, 200, 'LIVE\n') : send(res, 503, 'NOT READY\n');
      case '/config_dump':
        return send(res, 200, JSON.stringify(configDump(s.snapshot()), null, 2), 'application/json');
      case '/stats/prometheus':
      case '/metrics':
        return send(res, 200, s.prometheus ? await s.prometheus() : await s.registry.metrics(), s.registry.contentType);
      case '/clusters': {
        const clusters = await s.clusters();
        if (json) return send(res, 200, JSON.stringify({ cluster_statuses: clusters }, null, 2), 'application/json');
        const lines: string[] = [];
        for (const c of clusters) {
          lines.push(`${c.name}::lb_policy::${c.lb_policy}`);
          for (const e of c.endpoints) {
            lines.push(
              `${c.name}::${e.address}::health_flags::${e.health_flags ?? 'healthy'}`,
              `${c.name}::${e.address}::weight::${e.weight}`,
              `${c.name}::${e.address}::rq_active::${e.active}`,
              `${c.name}::${e.address}::ejections::${e.ejections ?? 0}`,
            );
          }
        }
        return send(res, 200, lines.join('\n') + (lines.length ? '\n' : ''));
      }
      case '/listeners': {
        const ls = await s.listeners();
        if (json) return send(res, 200, JSON.stringify({ listener_statuses: ls }, null, 2), 'application/json');
        return send(res, 200, ls.map((l) => `${l.name}::${l.address}::${l.protocol}::${l.route_config}::active_requests::${l.active_requests}`).join('\n') + (ls.length ? '\n' : ''));
      }
      case '/workers':
        if (!s.workers) return send(res, 404, 'no data plane workers (--workers 1)\n');
        return send(res, 200, JSON.stringify({ workers: await s.workers() }, null, 2), 'application/json');
      case '/debug/syncz':
        return send(res, 200, JSON.stringify(s.syncz(), null, 2), 'application/json');
      case '/':
        return send(res, 200, ['/healthz/ready', '/config_dump', '/stats/prometheus', '/clusters', '/listeners', '/debug/syncz'].join('\n') + '\n');
      default:
        return send(res, 404, `no admin endpoint ${url.pathname}\n`);
    }
  }
}
