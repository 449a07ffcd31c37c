// Target `direct`: the upstream itself, no proxy in between: the ceiling for this machine and
// load generator. Not a child of the bench's own, so no CPU or RSS is measured for it.
import type { Target } from '../types.js';
import type { Upstream } from '../upstream.js';

export function directTarget(up: Upstream): Target {
  return { name: 'direct', port: up.port, grpcPort: up.grpcPort, ...(up.tlsPort !== undefined ? { tlsPort: up.tlsPort } : {}), ...(up.h2Port !== undefined ? { h2Port: up.h2Port } : {}) };
}
