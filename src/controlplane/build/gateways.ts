// The Gateway servers this workload serves: Gateways whose selector matches its labels (every
// Gateway for `validate`), their servers grouped by port, and the listener protocol of each.
import type { GatewayServer, GatewaySpec, Resource } from '../../config/types.js';
import { resourceId } from '../../config/types.js';
import type { ListenerProtocol } from '../snapshot.js';
import type { BuildContext } from './context.js';
import { labelsMatch } from './visibility.js';

/** One server of a selected Gateway. */
export interface BoundServer {
  gw: Resource<GatewaySpec>;
  server: GatewayServer;
  /** Its index in `spec.servers` (field paths, and its id when it has no name). */
  index: number;
  protocol: ListenerProtocol;
}

/** Server TLS modes that route on SNI without terminating TLS. */
export const PASSTHROUGH_MODES: ReadonlySet<string> = new Set(['PASSTHROUGH', 'AUTO_PASSTHROUGH']);

/** The servers of the Gateways that select this workload, by port, in port order. */
export function serversByPort({ opts, config }: BuildContext): Array<[number, BoundServer[]]> {
  const mine = opts.allGateways ? config.gateways : config.gateways.filter((g) => labelsMatch(g.spec.selector ?? {}, opts.labels));
  const byPort = new Map<number, BoundServer[]>();
  for (const gw of mine) {
    (gw.spec.servers ?? []).forEach((server, index) => {
      const protocol = listenerProtocol(server);
      const list = byPort.get(server.port.number) ?? [];
      list.push({ gw, server, index, protocol });
      byPort.set(server.port.number, list);
    });
  }
  return [...byPort].sort((a, b) => a[0] - b[0]);
}

/** `Gateway/<ns>/<name>#<server name or index>`, as listeners and filter chains name their servers. */
export function serverId(s: BoundServer): string {
  return `${resourceId(s.gw)}#${s.server.name ?? s.index}`;
}

/** `<ns>/<name>` of a server's Gateway, as VirtualServices reference it. */
export function gatewayName(s: BoundServer): string {
  return `${s.gw.metadata.namespace}/${s.gw.metadata.name}`;
}

export function listenerProtocol(server: GatewayServer): ListenerProtocol {
  const p = server.port.protocol.toUpperCase();
  // HTTPS PASSTHROUGH is TLS passthrough, as in Istio (routes on SNI, VirtualService tls routes).
  if (p === 'HTTPS') return PASSTHROUGH_MODES.has(server.tls?.mode ?? 'PASSTHROUGH') && !server.tls?.httpsRedirect ? 'TLS' : 'HTTPS';
  if (p === 'HTTP2') return 'HTTP2';
  if (p === 'GRPC' || p === 'GRPC-WEB') return 'GRPC';
  if (p === 'TLS') return 'TLS';
  // Istio's gateway: HTTP-based protocols (HTTP, HTTP_PROXY) get HTTP routes, every other one
  // (TCP, MONGO, MYSQL, REDIS, UDP) TCP routes.
  if (p === 'HTTP' || p === 'HTTP_PROXY') return 'HTTP';
  return 'TCP';
}
