// The filter chain every request runs before the router, HTTP exchanges and WebSocket handshakes
// alike, in the order Istio configures Envoy's HTTP connection manager at a gateway:
// tracing (the connection manager's span) → jwt_authn → ext_authz → rbac (one security step) →
// cors → fault → router.
//
// A new route policy (tracing, a local rate limit...) is one file in this folder exporting an
// HttpFilter, and one line in HTTP_FILTERS at its place in Envoy's order.
import { corsFilter } from './cors.js';
import { faultFilter } from './fault.js';
import { CONTINUE, respond, type FilterVerdict, type HttpFilter, type FilterRequest, type LocalReply } from './filter.js';
import { securityFilter } from './security.js';
import { tracingFilter } from './tracing.js';

export type FilterChain = readonly HttpFilter[];

/** The chain of every listener: one static array, never built per request. */
export const HTTP_FILTERS: FilterChain = Object.freeze([tracingFilter, securityFilter, corsFilter, faultFilter]);

/** A request running the chain: what the chain asks of its lifecycle (Exchange, the WebSocket Bridge). */
export interface FilterHost extends FilterRequest {
  readonly filters: FilterChain;
  /** A filter answered: the chain stops here. */
  respond(reply: LocalReply): void;
  /**
   * A filter holds the request: `delay` for a fault delay (the timer is the host's to clear when
   * it finishes early), `wait` for an asynchronous decision. Body chunks that arrive meanwhile
   * are kept. The host calls `resumeFilters(this, index)` (delay) when the timer fires.
   */
  hold(kind: 'delay' | 'wait', timer: NodeJS.Timeout | null): void;
  /** The hold is over; false when the request ended meanwhile (the client went away): nothing more runs. */
  unhold(): boolean;
  /** Every filter let the request through: the router's turn. */
  router(): void;
}

const FAILED = respond(500, '', 'internal error');

/** Runs the host's chain from filter `from`, synchronously as far as the filters allow. */
export function runFilters(host: FilterHost, from = 0): void {
  const chain = host.filters;
  for (let i = from; i < chain.length; i++) {
    const v = chain[i]!.decode(host);
    if (v !== CONTINUE && !settle(host, i, v)) return;
  }
  host.router();
}

/** After filter `index`'s delay: the filter's afterDelay, then the rest of the chain. */
export function resumeFilters(host: FilterHost, index: number): void {
  if (!host.unhold()) return;
  const f = host.filters[index]!;
  const v = f.afterDelay ? f.afterDelay(host) : CONTINUE;
  if (v === CONTINUE || settle(host, index, v)) runFilters(host, index + 1);
}

/** Acts on a verdict other than CONTINUE; true when the chain goes on at once. */
function settle(host: FilterHost, index: number, v: FilterVerdict): boolean {
  switch (v.kind) {
    case 'continue':
      return true;
    case 'respond':
      host.respond(v);
      return false;
    case 'delay':
      host.hold('delay', setTimeout(resumeFilters, v.ms, host, index));
      return false;
    case 'wait':
      host.hold('wait', null);
      v.until.then(
        (next) => {
          if (!host.unhold()) return;
          if (next === CONTINUE || settle(host, index, next)) runFilters(host, index + 1);
        },
        () => {
          if (host.unhold()) host.respond(FAILED);
        },
      );
      return false;
  }
}
