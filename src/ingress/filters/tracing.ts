// Tracing, first in the chain as Envoy's connection manager starts a request's span before its
// filters run (a request a later filter answers is traced too): the incoming trace context is
// read and the sampling decided (src/telemetry/tracing). The router then gives each upstream
// attempt (and mirror) its own span, and the lifecycle ends the request's span when it finishes.
import { CONTINUE, type FilterRequest, type FilterVerdict, type HttpFilter } from './filter.js';

export const tracingFilter: HttpFilter = {
  name: 'envoy.tracing',
  decode(req: FilterRequest): FilterVerdict {
    const tracer = req.ctx.tracer;
    if (tracer != null) req.trace = tracer.start(req.head, req.head.headers, req.conn.remoteAddress, req.head.forceTrace === true, req.startedAt);
    return CONTINUE;
  },
};
