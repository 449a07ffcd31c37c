// The strict HTTP/1.1 rules of the node:http engine (NodeListener's HTTP/1.1 server: the strict
// engine of plain HTTP ports, and HTTP/1.1 on every node:http2 port), beyond what llhttp itself
// refuses (bad request lines and methods, whitespace before a colon, NUL/CTL in values, obs-fold,
// bare CR or LF, conflicting or malformed framing, bad chunk sizes: all answered 400 here). As
// Envoy's HTTP/1 codec: RFC 9112 as written, answered before anything is forwarded.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';


/**
 * What a request that llhttp parsed must still be refused for, with the status Envoy answers:
 * - HTTP/1.0 → 426 (Envoy without `accept_http_10`, Istio's default); a request line without a
 *   version (HTTP/0.9) → 400; another major version (`HTTP/2.0` in a request line) → 505;
 * - more than one Host field line → 400 (RFC 9112 3.2: a MUST);
 * - a transfer coding llhttp accepts but that is not `chunked` alone (`gzip, chunked`) → 501, as
 *   Envoy (the gateway would forward a coded body without its coding).
 * Null when the request may be routed.
 */
export function requestProblem(req: IncomingMessage): [status: number, body: string] | null {
  const major = req.httpVersionMajor;
  if (major !== 1) return major === 0 ? [400, 'Bad Request'] : [505, 'HTTP Version Not Supported'];
  if (req.httpVersionMinor === 0) return [426, 'Upgrade Required'];
  const raw = req.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!;
    if (k.length === 4 && k.toLowerCase() === 'host' && ++hosts > 1) return [400, 'Bad Request'];
  }
  const te = req.headers['transfer-encoding'];
  if (te !== undefined && te.toLowerCase() !== 'chunked') return [501, 'Not Implemented'];
  return null;
}

/**
 * An absolute-form request target (`GET http://example.com/a?b HTTP/1.1`): RFC 9112 3.2.2 has
 * the server take the authority from it and ignore Host, as Envoy does. Null for other forms.
 */
export function absoluteForm(target: string): { authority: string; target: string } | null {
  const scheme = target.charCodeAt(0) === 104 /* h */ || target.charCodeAt(0) === 72 /* H */ ? /^https?:\/\//i.exec(target) : null;
  if (!scheme) return null;
  const rest = target.slice(scheme[0].length);
  const end = rest.search(/[/?#]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  let path = end < 0 ? '/' : rest[end] === '/' ? rest.slice(end) : `/${rest.slice(end)}`;
  const hash = path.indexOf('#');
  if (hash >= 0) path = path.slice(0, hash);
  return { authority, target: path };
}

const answering = new WeakSet<Socket>();

/**
 * llhttp refused the bytes on a connection (`clientError`): 431 for a head over the parser's
 * limit, else 400, then the connection is closed (nothing after a malformed message can be
 * framed). In order: the answers to requests before it on the connection (pipelining) are
 * finished first. When the bad bytes are the body of the request being answered, that request
 * gets the 400 if its answer has not started, else its connection is reset.
 */
export function answerClientError(err: Error & { code?: string }, socket: Socket): void {
  if (answering.has(socket)) return;
  answering.add(socket);
  socket.pause();
  const answer = `HTTP/1.1 ${err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\nserver: istio-envoy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`;
  // Written, then the connection closed once it is flushed (a client that keeps its side open holds no fd).
  const refuse = (): void => void socket.end(answer, () => socket.destroy());
  const step = (): void => {
    if (socket.destroyed || !socket.writable) return void socket.destroy();
    // The response node:http is writing on this connection now (the next one is assigned when it finishes).
    const res = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (!res) return refuse();
    if (!res.req.complete) {
      // Its own body was malformed: this request is the one refused (reset if its answer began).
      return res.headersSent ? void socket.destroy() : refuse();
    }
    let done = false;
    const next = (): void => {
      if (done) return;
      done = true;
      setImmediate(step);
    };
    res.once('finish', next);
    res.once('close', next);
  };
  step();
}
