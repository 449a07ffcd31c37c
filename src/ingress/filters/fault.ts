// Envoy's fault filter as Istio configures it from a VirtualService `fault`: a delay (flag DI) for
// a share of requests, then an abort (flag FI) with an HTTP status, or for gRPC a 200 carrying
// grpc-status, for a share of requests. The shares are rolled per request.
import type { CompiledRoute } from '../../routing/route-table.js';
import { CONTINUE, addFlag, respond, roll, type FilterRequest, type FilterVerdict, type HttpFilter } from './filter.js';

export const faultFilter: HttpFilter = {
  name: 'envoy.filters.http.fault',
  decode(req: FilterRequest): FilterVerdict {
    const fault = req.route?.fault;
    if (fault == null) return CONTINUE;
    if (fault.delayPerMillion > 0 && roll(fault.delayPerMillion)) {
      req.flags = addFlag(req.flags, 'DI');
      return { kind: 'delay', ms: fault.delayMs };
    }
    return abort(req.route!);
  },
  afterDelay(req: FilterRequest): FilterVerdict {
    return req.route ? abort(req.route) : CONTINUE;
  },
};

function abort(route: CompiledRoute): FilterVerdict {
  const fault = route.fault!;
  if (fault.abortPerMillion <= 0 || !roll(fault.abortPerMillion)) return CONTINUE;
  if (fault.abortGrpcStatus >= 0) {
    return respond(200, 'FI', '', ['content-type', 'application/grpc', 'grpc-status', String(fault.abortGrpcStatus), 'grpc-message', 'fault filter abort']);
  }
  return respond(fault.abortStatus, 'FI', 'fault filter abort');
}
