// What routing needs to know about a request, the same for every downstream engine (uWS, node:http2).
// Header names are lower-case; `headers` is a flat [name, value, name, value, ...] array, the form
// undici accepts, so the same array is forwarded upstream after editing.

export interface RequestHead {
  method: string;
  /** Path without the query string, as received. */
  path: string;
  /** Query string without the `?`, '' when none. */
  query: string;
  /** Host header lower-cased with any port removed. */
  host: string;
  /** Host header as received (with port), for `:authority` matches and forwarding. */
  authority: string;
  scheme: 'http' | 'https';
  headers: string[];
  /** The port the request came in on (for redirects that keep it). */
  localPort?: number;
  /**
   * The client sent `x-envoy-force-trace` (removed from the headers with every client `x-envoy-*`);
   * tracing honours it from a trusted internal hop only. Set only when sent.
   */
  forceTrace?: true;
}

export function getHeader(head: RequestHead, name: string): string | undefined {
  const h = head.headers;
  for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1];
  return undefined;
}

/** Value of a pseudo-header (`:method`, `:authority`, `:scheme`, `:path`) or a regular header. */
export function headerValue(head: RequestHead, name: string): string | undefined {
  switch (name) {
    case ':method':
      return head.method;
    case ':authority':
      return head.authority;
    case ':scheme':
      return head.scheme;
    case ':path':
      return head.query ? `${head.path}?${head.query}` : head.path;
    default:
      return getHeader(head, name);
  }
}

/** The value of one query parameter, not URL-decoded (as Envoy's route matching reads it). */
export function queryParam(query: string, name: string): string | undefined {
  if (!query) return undefined;
  let start = 0;
  while (start <= query.length) {
    let end = query.indexOf('&', start);
    if (end < 0) end = query.length;
    const eq = query.indexOf('=', start);
    const keyEnd = eq >= 0 && eq < end ? eq : end;
    if (keyEnd - start === name.length && query.startsWith(name, start)) return eq >= 0 && eq < end ? query.slice(eq + 1, end) : '';
    start = end + 1;
  }
  return undefined;
}
