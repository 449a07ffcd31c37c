// The downstream side of one request, as the request lifecycle sees it. Each engine (uWS for
// HTTP/1.1, node:http2 for h2, h2c and their HTTP/1.1 fallback) implements it; the lifecycle in
// exchange.ts is written once against it.
import type { X509Certificate } from 'node:crypto';

export type HeaderValue = string | Buffer;

/** CR, LF, NUL and the other control characters RFC 9110 forbids in a field value (HTAB allowed). */
const UNSAFE_VALUE = /[\u0000-\u0008\u000a-\u001f\u007f]/;

/**
 * A header value a writer may put on the wire. Validation refuses configuration that carries CR,
 * LF or NUL; this is the second guard (a replica's decoded config, a value built at request time):
 * uWS would write such a value raw (`a\r\nX-Injected: 1` is then a header of its own) and node
 * throws on it. Buffers come from upstream parsers that already refuse them.
 */
export function writableHeaderValue(v: HeaderValue): boolean {
  return typeof v !== 'string' || !UNSAFE_VALUE.test(v);
}

export interface ResponseSink {
  /** The client's address (IPv4 without the `::ffff:` prefix). */
  readonly remoteAddress: string;
  /** True once the response is finished or the client has gone: nothing more may be written. */
  readonly closed: boolean;
  /**
   * Starts the response. `length` is the body length (-1 when unknown: chunked); `noBody` for HEAD,
   * 204 and 304 responses, where `length` is only reported.
   */
  start(status: number, headers: readonly HeaderValue[], length: number, noBody: boolean): void;
  /** Writes a body chunk; false when the client is slow: wait for `onDrain` before writing more. */
  write(chunk: Buffer): boolean;
  /** Called once when the data written so far has been handed to the socket. */
  onDrain(cb: () => void): void;
  /** Finishes the response, with an optional last chunk. */
  end(chunk?: Buffer): void;
  /** Resets the client's connection: used when a started response cannot be completed. */
  reset(): void;
  /** Runs `fn` with writes coalesced into one send (uWS cork). */
  batch(fn: () => void): void;
  /** Flow control for the request body. Calls are paired: resume only after pause. */
  pauseRequestBody(): void;
  resumeRequestBody(): void;
  /** Called once by the lifecycle when the request is over (answered, reset or abandoned). */
  finished(): void;

  /**
   * Finishes the response with trailers (gRPC's `grpc-status`), with an optional last chunk.
   * Only engines that can send trailers have it: HTTP/2 streams. uWS cannot write HTTP/1.1
   * chunked trailers, and Envoy drops trailers towards HTTP/1.1 clients by default
   * (`enable_trailers` off), so HTTP/1.1 sinks leave it undefined and the lifecycle calls `end`.
   */
  endWithTrailers?(trailers: readonly HeaderValue[], chunk?: Buffer): void;
  /** `HTTP/1.1` or `HTTP/2`, for access logs; undefined means HTTP/1.1. */
  readonly protocol?: string;
  /** TLS listeners that asked for one: the client's certificate (for authorization). */
  readonly peerCertificate?: X509Certificate | undefined;
  /** The `spiffe://` URI SAN of the client's certificate, when it has one (Istio's source principal). */
  readonly peerSpiffeId?: string | undefined;
  /** Istio's `source.principal`: the SPIFFE id without `spiffe://` (`cluster.local/ns/x/sa/y`). */
  readonly peerPrincipal?: string | undefined;
  /** Istio's `source.namespace`: the `ns` segment of the SPIFFE id. */
  readonly peerNamespace?: string | undefined;
  /** The local address the connection came in on (`destination.ip`; the PROXY destination with the PROXY protocol). */
  readonly localAddress?: string | undefined;
  /** The TLS server name the client asked for (`connection.sni`), when known. */
  readonly serverName?: string | undefined;
}
