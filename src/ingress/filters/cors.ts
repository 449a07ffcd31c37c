// Envoy's cors filter: a preflight from an allowed origin is answered at the gateway; an actual
// request from an allowed origin gets the allow-origin (and credentials, expose) headers on its
// response; other origins get no CORS headers. Unmatched preflights are forwarded or, with
// `unmatchedPreflights: IGNORE`, answered without CORS headers.
import { getHeader } from '../../routing/request.js';
import { headerOps } from '../../routing/route-table.js';
import { CONTINUE, respond, type FilterRequest, type FilterVerdict, type HttpFilter } from './filter.js';

const EMPTY = Buffer.alloc(0);

export const corsFilter: HttpFilter = {
  name: 'envoy.filters.http.cors',
  decode(req: FilterRequest): FilterVerdict {
    const cors = req.route?.cors;
    if (cors == null) return CONTINUE;
    const head = req.head;
    const origin = getHeader(head, 'origin');
    if (origin === undefined) return CONTINUE;
    const allowed = cors.allows(origin);
    if (head.method === 'OPTIONS' && getHeader(head, 'access-control-request-method') !== undefined) {
      if (allowed) return respond(200, '', EMPTY, ['access-control-allow-origin', origin, ...cors.preflight]);
      if (!cors.forwardNotMatchingPreflights) return respond(200, '', EMPTY);
      return CONTINUE;
    }
    if (allowed) {
      const set: Array<[string, string]> = [['access-control-allow-origin', origin]];
      for (let i = 0; i < cors.actual.length; i += 2) set.push([cors.actual[i]!, cors.actual[i + 1]!]);
      req.addResponseOps(headerOps(set, [], []));
    }
    return CONTINUE;
  },
};
