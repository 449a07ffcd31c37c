// What a request lifecycle reads of the client's connection (address, TLS facts), and the
// SecurityRequest the security policies see of a request on it. Below the filters and the
// lifecycles that use it (filters/, exchange.ts, websocket.ts), so that none of them imports back.
import { isIP } from 'node:net';
import type { RequestHead } from '../routing/request.js';
import type { SecurityRequest } from '../security/types.js';
import type { ResponseSink } from './sink.js';

/** What the security filters read of a connection (a ResponseSink has it). */
export type ConnectionFacts = Pick<ResponseSink, 'remoteAddress' | 'localAddress' | 'serverName' | 'peerSpiffeId' | 'peerPrincipal' | 'peerNamespace'>;

/** The SecurityRequest of a request head on a connection; `headers` are the ones going upstream. */
export function securityRequest(head: RequestHead, conn: ConnectionFacts, trustedHops: number, headers: string[]): SecurityRequest {
  const sourceIp = conn.remoteAddress;
  const spiffe = conn.peerSpiffeId;
  // The mesh identity as the TLS layer read it; else the SPIFFE id without `spiffe://`.
  const principal = conn.peerPrincipal ?? (spiffe !== undefined && spiffe.startsWith('spiffe://') ? spiffe.slice(9) : '');
  const ns = principal.indexOf('/ns/');
  return {
    method: head.method,
    path: head.path,
    query: head.query,
    host: head.host,
    authority: head.authority,
    headers,
    localPort: head.localPort ?? 0,
    sourceIp,
    remoteIp: trustedClientAddress(headers, trustedHops, sourceIp),
    destinationIp: conn.localAddress ?? '',
    sourcePrincipal: principal,
    sourceNamespace: conn.peerNamespace ?? (ns >= 0 ? principal.slice(ns + 4).split('/')[0]! : ''),
    sni: conn.serverName ?? '',
  };
}

/**
 * `remote.ip` as Envoy derives it with use_remote_address and xff_num_trusted_hops = N: the Nth
 * address from the right of the X-Forwarded-For the client sent (the listener appended the peer
 * to it), else the peer itself (N = 0, too few or invalid entries).
 */
export function trustedClientAddress(headers: readonly string[], hops: number, peer: string): string {
  if (hops <= 0) return peer;
  let xff: string | undefined;
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === 'x-forwarded-for') xff = headers[i + 1];
  if (xff === undefined) return peer;
  const parts = xff.split(',');
  // The last entry is the peer appended by the listener: the Nth from the right of the rest.
  const i = parts.length - 1 - hops;
  if (i < 0) return peer;
  const ip = parts[i]!.trim();
  return isIP(ip) !== 0 ? ip : peer;
}
