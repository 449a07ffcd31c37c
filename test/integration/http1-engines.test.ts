// The two HTTP/1.1 engines side by side (issue 14, item 3): the same malformed and edge inputs, on
// raw sockets, to a uWS port and to a strict-engine port (`gatehouse.io/http1-engine: strict`,
// node:http with llhttp) of one gateway, routed to the same upstream. Each row says what each
// engine does — the statuses it answers, in order, and whether it closes the connection or leaves
// it open (a "hang": no answer, connection open) — and whether a complete request reached the
// upstream. The uWS column documents the deviations from RFC 9112 that remain in
// uWebSockets.js 3.0.6 (the README's security section lists them); the strict column is what
// Envoy does. Neither engine ever forwards a smuggled request. A part of the table runs again
// over TLS, on SIMPLE HTTPS servers narrowed to HTTP/1.1 (`gatehouse.io/alpn: http/1.1`, the only
// HTTPS ports uWS serves), where the strict engine is the node:http2 listener's HTTP/1.1 side.
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePorts, http, rawStatus, waitFor } from '../helpers/net.js';
import { createCa, type TestCa } from '../helpers/openssl-ca.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const HOST = 'edge.test';
/** How long a connection is watched: an open connection with no answer by then is a hang. */
const WATCH_MS = 2500;

type Engine = 'uws' | 'strict';

interface Outcome {
  /** The statuses answered, in order (100 Continue included). */
  statuses: number[];
  /** True: the gateway closed the connection; false: still open when the watch ended. */
  closed: boolean;
  /** A complete request of this row reached the upstream (unset: not asserted). */
  forwarded?: boolean;
  /** The upstream paths answered, in order (from the echo's JSON bodies). */
  urls?: string[];
}

/** No answer at all and the connection left open (uWS holds it until its idle timeout). */
const HANG: Outcome = { statuses: [], closed: false, forwarded: false };
/** No answer, the connection closed. */
const CLOSED: Outcome = { statuses: [], closed: true, forwarded: false };
const refused = (status: number, closed = true): Outcome => ({ statuses: [status], closed, forwarded: false });
const served = (...urls: string[]): Outcome => ({ statuses: urls.map(() => 200), closed: false, forwarded: true, urls });

interface Row {
  name: string;
  /** The bytes sent; `p` is this row's path prefix on this engine (`/uws/7`), `h` the Host line. */
  send: (p: string, h: string) => string | Buffer;
  uws: Outcome | ((p: string) => Outcome);
  strict: Outcome | ((p: string) => Outcome);
}

const H2C = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n';
const smuggled = (p: string, h: string): string => `GET ${p}/smuggled HTTP/1.1\r\n${h}\r\n`;
const chunked = (p: string, h: string, body: string, path = '/te'): string => `POST ${p}${path} HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\n\r\n${body}`;

const ROWS: Row[] = [
  // ---- Request lines ----
  { name: 'bytes that are not HTTP (GARBAGE)', send: () => 'GARBAGE\r\n\r\n', uws: refused(505), strict: refused(400) },
  { name: 'binary bytes', send: () => Buffer.from([0, 1, 2, 3, 0xff, 0x20, 0x0d, 0x0a, 0x0d, 0x0a]), uws: refused(505), strict: refused(400) },
  { name: 'a space inside the request target', send: (p, h) => `GET ${p}/a b HTTP/1.1\r\n${h}\r\n`, uws: refused(505), strict: refused(400) },
  { name: 'bare LF line ends', send: (p, h) => `GET ${p}/lf HTTP/1.1\n${h.replace('\r', '')}\n`, uws: refused(505), strict: refused(400) },
  { name: 'an empty line before the request line (RFC 9112 2.2: to be ignored)', send: (p, h) => `\r\nGET ${p}/crlf HTTP/1.1\r\n${h}\r\n`, uws: refused(505), strict: (p) => served(`${p}/crlf`) },
  { name: 'HTTP/1.0 (Envoy: 426 unless accept_http_10)', send: (p, h) => `GET ${p}/old HTTP/1.0\r\n${h}\r\n`, uws: refused(505), strict: refused(426) },
  { name: 'no version (HTTP/0.9)', send: (p) => `GET ${p}/nine\r\n\r\n`, uws: refused(505), strict: refused(400) },
  { name: 'HTTP/2.0 in an HTTP/1 request line', send: (p, h) => `GET ${p}/two HTTP/2.0\r\n${h}\r\n`, uws: refused(505), strict: refused(505) },
  { name: 'absolute-form target (RFC 9112 3.2.2: its authority, not Host, is used)', send: (p) => `GET http://${HOST}${p}/abs HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n`, uws: refused(505), strict: (p) => served(`${p}/abs`) },
  { name: 'a method that is not a token (G@T)', send: (p, h) => `G@T ${p}/odd HTTP/1.1\r\n${h}\r\n`, uws: refused(400, false), strict: refused(400) },
  // The echo upstream (node:http) refuses an unregistered method itself: uWS forwarded it.
  { name: 'an unregistered method (FOO; Envoy refuses it without allow_custom_methods)', send: (p, h) => `FOO ${p}/foo HTTP/1.1\r\n${h}\r\n`, uws: { statuses: [400], closed: false, forwarded: true }, strict: refused(400) },

  // ---- Header lines ----
  { name: 'whitespace before a header colon', send: (p, h) => `GET ${p}/ws HTTP/1.1\r\n${h}X-A : b\r\n\r\n`, uws: HANG, strict: refused(400) },
  { name: 'a NUL in a header value', send: (p, h) => `GET ${p}/nul HTTP/1.1\r\n${h}X-A: b\0c\r\n\r\n`, uws: HANG, strict: refused(400) },
  { name: 'a control character (0x01) in a header value', send: (p, h) => `GET ${p}/ctl HTTP/1.1\r\n${h}X-A: b\x01c\r\n\r\n`, uws: HANG, strict: refused(400) },
  { name: 'a bare CR in a header value', send: (p, h) => `GET ${p}/cr HTTP/1.1\r\n${h}X-A: b\rc\r\n\r\n`, uws: HANG, strict: refused(400) },
  { name: 'obs-fold (a header value continued on the next line)', send: (p, h) => `GET ${p}/fold HTTP/1.1\r\n${h}X-A: b\r\n c\r\n\r\n`, uws: HANG, strict: refused(400) },
  { name: 'a header line without a colon', send: (p, h) => `GET ${p}/nocolon HTTP/1.1\r\n${h}Foo\r\n\r\n`, uws: HANG, strict: refused(400) },
  { name: 'header names with _ and . (valid tokens; Envoy forwards them)', send: (p, h) => `GET ${p}/names HTTP/1.1\r\n${h}X_User: a\r\nX.Y: b\r\n\r\n`, uws: HANG, strict: (p) => served(`${p}/names`) },
  { name: '100 header fields (Envoy\'s limit: accepted)', send: (p, h) => `GET ${p}/h100 HTTP/1.1\r\n${h}${Array.from({ length: 99 }, (_, i) => `x-h${i}: 1\r\n`).join('')}\r\n`, uws: HANG, strict: (p) => served(`${p}/h100`) },
  { name: '101 header fields (Envoy: 431)', send: (p, h) => `GET ${p}/h101 HTTP/1.1\r\n${h}${Array.from({ length: 100 }, (_, i) => `x-h${i}: 1\r\n`).join('')}\r\n`, uws: HANG, strict: refused(431, false) },
  { name: 'a request line and no header lines', send: (p) => `GET ${p}/bare HTTP/1.1\r\n\r\n`, uws: HANG, strict: refused(400, false) },
  { name: 'no Host (other headers)', send: (p) => `GET ${p}/nohost HTTP/1.1\r\nUser-Agent: raw\r\n\r\n`, uws: refused(400), strict: refused(400, false) },
  { name: 'two Host lines (RFC 9112 3.2: 400)', send: (p, h) => `GET ${p}/hosts HTTP/1.1\r\n${h}Host: other.test\r\n\r\n`, uws: refused(400), strict: refused(400) },

  // ---- Body framing and smuggling ----
  { name: 'CL.TE: Content-Length then Transfer-Encoding, a request smuggled in the body', send: (p, h) => `POST ${p}/clte HTTP/1.1\r\n${h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled(p, h)}`, uws: refused(400), strict: refused(400) },
  { name: 'TE.CL: Transfer-Encoding then Content-Length, a request smuggled in the body', send: (p, h) => `POST ${p}/tecl HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${smuggled(p, h)}`, uws: refused(400), strict: refused(400) },
  // The uWS handler refuses these (400 on the next turn), but the bytes behind the head make uWS
  // close the connection first: no answer, nothing forwarded (without them: 400, bad-input.test.ts).
  { name: 'two different Content-Lengths', send: (p, h) => `POST ${p}/clcl HTTP/1.1\r\n${h}Content-Length: 3\r\nContent-Length: ${3 + smuggled(p, h).length}\r\n\r\nabc${smuggled(p, h)}`, uws: CLOSED, strict: refused(400) },
  // llhttp lets the head through and fails on the body: the handler's 501 (as Envoy) goes first.
  { name: 'Transfer-Encoding: xchunked', send: (p, h) => `POST ${p}/x HTTP/1.1\r\n${h}Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n${smuggled(p, h)}`, uws: CLOSED, strict: refused(501) },
  { name: 'Transfer-Encoding: chunked, identity', send: (p, h) => `POST ${p}/ci HTTP/1.1\r\n${h}Transfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n${smuggled(p, h)}`, uws: CLOSED, strict: refused(400) },
  { name: 'Transfer-Encoding twice', send: (p, h) => `POST ${p}/te2 HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n${smuggled(p, h)}`, uws: CLOSED, strict: refused(400) },
  { name: 'Transfer-Encoding: gzip, chunked (Envoy: 501)', send: (p, h) => `POST ${p}/gz HTTP/1.1\r\n${h}Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, uws: refused(400), strict: refused(501) },
  { name: 'whitespace before the Transfer-Encoding colon', send: (p, h) => `POST ${p}/tews HTTP/1.1\r\n${h}Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${smuggled(p, h)}`, uws: HANG, strict: refused(400) },
  { name: 'a chunk size that is not hex', send: (p, h) => chunked(p, h, `zz\r\nabc\r\n0\r\n\r\n`), uws: refused(400), strict: refused(400) },
  { name: 'a chunk size that overflows 64 bits', send: (p, h) => chunked(p, h, `fffffffffffffffffff\r\nabc\r\n0\r\n\r\n`), uws: refused(400), strict: refused(400) },
  { name: 'a negative chunk size', send: (p, h) => chunked(p, h, `-3\r\nabc\r\n0\r\n\r\n`), uws: refused(400), strict: refused(400) },
  // uWS skips the two bytes after chunk data unread: "abcXX5\r\nhello" is taken as abc + hello.
  { name: 'chunk data not followed by CRLF', send: (p, h) => chunked(p, h, `3\r\nabcXX5\r\nhello\r\n0\r\n\r\n`, '/nocrlf'), uws: (p) => served(`${p}/nocrlf`), strict: refused(400) },
  { name: 'whitespace after a chunk size', send: (p, h) => chunked(p, h, `3 \r\nabc\r\n0\r\n\r\n`, '/bws'), uws: (p) => served(`${p}/bws`), strict: refused(400) },
  // uWS has no chunk extensions: 400 here, no answer when the extension is hex digits (`3;a=b`).
  { name: 'a chunk extension (valid)', send: (p, h) => chunked(p, h, `3;name=v\r\nabc\r\n0\r\n\r\n`, '/ext'), uws: refused(400), strict: (p) => served(`${p}/ext`) },
  { name: 'a chunked body with a trailer field (valid), then a pipelined request', send: (p, h) => `${chunked(p, h, `3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n`, '/trailer')}GET ${p}/next HTTP/1.1\r\n${h}\r\n`, uws: refused(505), strict: (p) => served(`${p}/trailer`, `${p}/next`) },
  {
    name: 'a Content-Length body carrying a request, answered locally (404): skipped, never parsed',
    send: (p, h) => `POST ${p}/nr HTTP/1.1\r\nHost: unrouted.test\r\nContent-Length: ${smuggled(p, h).length}\r\n\r\n${smuggled(p, h)}GET ${p}/next HTTP/1.1\r\n${h}\r\n`,
    uws: (p) => ({ statuses: [404, 200], closed: false, forwarded: true, urls: [`${p}/next`] }),
    strict: (p) => ({ statuses: [404, 200], closed: false, forwarded: true, urls: [`${p}/next`] }),
  },
  { name: 'Expect: 100-continue', send: (p, h) => `POST ${p}/expect HTTP/1.1\r\n${h}Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc`, uws: (p) => ({ statuses: [100, 200], closed: false, forwarded: true, urls: [`${p}/expect`] }), strict: (p) => ({ statuses: [100, 200], closed: false, forwarded: true, urls: [`${p}/expect`] }) },

  // ---- Pipelining ----
  // uWS closes a connection that pipelines behind a pending (asynchronous) answer, unanswered.
  { name: 'two pipelined requests, the first answered asynchronously', send: (p, h) => `GET ${p}/1 HTTP/1.1\r\n${h}x-test-delay: 200\r\n\r\nGET ${p}/2 HTTP/1.1\r\n${h}\r\n`, uws: { statuses: [], closed: true }, strict: (p) => served(`${p}/1`, `${p}/2`) },
  { name: 'three pipelined requests, the later ones answered first upstream', send: (p, h) => `GET ${p}/1 HTTP/1.1\r\n${h}x-test-delay: 300\r\n\r\nGET ${p}/2 HTTP/1.1\r\n${h}x-test-delay: 100\r\n\r\nGET ${p}/3 HTTP/1.1\r\n${h}\r\n`, uws: { statuses: [], closed: true }, strict: (p) => served(`${p}/1`, `${p}/2`, `${p}/3`) },
  {
    name: 'a request pipelined behind a local reply (404, answered synchronously)',
    send: (p, h) => `GET ${p}/nr HTTP/1.1\r\nHost: unrouted.test\r\n\r\nGET ${p}/after HTTP/1.1\r\n${h}\r\n`,
    uws: (p) => ({ statuses: [404, 200], closed: false, forwarded: true, urls: [`${p}/after`] }),
    strict: (p) => ({ statuses: [404, 200], closed: false, forwarded: true, urls: [`${p}/after`] }),
  },
  { name: 'a malformed request pipelined behind a valid one', send: (p, h) => `GET ${p}/ok HTTP/1.1\r\n${h}x-test-delay: 100\r\n\r\nGET ${p}/bad HTTP/1.1\r\n${h}X-A : b\r\n\r\n`, uws: (p) => served(`${p}/ok`), strict: (p) => ({ statuses: [200, 400], closed: true, forwarded: true, urls: [`${p}/ok`] }) },

  // ---- Upgrades ----
  { name: 'Upgrade: h2c (curl --http2 on http://): served as HTTP/1.1', send: (p, h) => `GET ${p}/h2c HTTP/1.1\r\n${h}${H2C}\r\n`, uws: (p) => served(`${p}/h2c`), strict: (p) => served(`${p}/h2c`) },
  { name: 'Upgrade: h2c with a body and a request pipelined behind it: the connection goes on', send: (p, h) => `POST ${p}/h2c HTTP/1.1\r\n${h}${H2C}Content-Length: 5\r\n\r\nhelloGET ${p}/after HTTP/1.1\r\n${h}\r\n`, uws: CLOSED, strict: (p) => served(`${p}/h2c`, `${p}/after`) },
  // The strict engine re-reads an h2c request without its upgrade fields: with more fields than it
  // keeps, the head cannot be rebuilt whole (Content-Length may be among the dropped ones): refused.
  {
    name: 'Upgrade: h2c with 120 header fields, its Content-Length last, a request smuggled in the body',
    send: (p, h) => `POST ${p}/h2c-many HTTP/1.1\r\n${h}${H2C}${Array.from({ length: 120 }, (_, i) => `x-h${i}: 1\r\n`).join('')}Content-Length: ${smuggled(p, h).length}\r\n\r\n${smuggled(p, h)}`,
    uws: HANG,
    strict: refused(431),
  },
  { name: 'an upgrade to something other than WebSocket (Envoy: 403)', send: (p, h) => `GET ${p}/spdy HTTP/1.1\r\n${h}Connection: Upgrade\r\nUpgrade: spdy/3.1\r\n\r\n`, uws: (p) => served(`${p}/spdy`), strict: refused(403) },
];

/** The rows run again over TLS. */
const TLS_ROWS = [
  'whitespace before a header colon',
  'a NUL in a header value',
  'header names with _ and . (valid tokens; Envoy forwards them)',
  '101 header fields (Envoy: 431)',
  'CL.TE: Content-Length then Transfer-Encoding, a request smuggled in the body',
  'two pipelined requests, the first answered asynchronously',
  'a malformed request pipelined behind a valid one',
];

let gw: GatewayProcess;
let echo: Echo;
let ca: TestCa;
const ports: Record<Engine, number> = { uws: 0, strict: 0 };
const tlsPorts: Record<Engine, number> = { uws: 0, strict: 0 };

interface Seen {
  data: string;
  closed: boolean;
}

/** Sends raw bytes on a fresh connection; collects everything until the server closes it or the watch ends. */
function exchange(port: number, bytes: string | Buffer, tls = false): Promise<Seen> {
  return new Promise((resolve) => {
    const sock: Socket = tls ? tlsConnect({ host: '127.0.0.1', port, servername: HOST, ca: ca.certPem }) : tcpConnect(port, '127.0.0.1');
    let data = '';
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ data, closed });
    };
    const timer = setTimeout(() => finish(false), WATCH_MS);
    sock.on(tls ? 'secureConnect' : 'connect', () => sock.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes));
    sock.on('data', (d: Buffer) => (data += d.toString('latin1')));
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('error', () => finish(true));
  });
}

/** What one row did on one engine. */
function outcome(seen: Seen, prefix: string): Outcome {
  const statuses = [...seen.data.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
  const urls = [...seen.data.matchAll(/"url":"([^"]*)"/g)].map((m) => m[1]!);
  // A complete request reached the upstream: the echo answered it, or its answer came back.
  const forwarded = echo.requests.some((r) => r.url.startsWith(`${prefix}/`) && r.completed) || /x-envoy-upstream-service-time:/i.test(seen.data);
  return { statuses, closed: seen.closed, forwarded, urls };
}

type Results = Map<string, Record<Engine, { seen: Seen; prefix: string }>>;
const results: Results = new Map();
const tlsResults: Results = new Map();

/** A Gateway with one server on `port`, with these annotations. */
function annotatedGateway(name: string, port: number, annotations: Record<string, string>, tls = false): Record<string, unknown> {
  const server = tls ? { port: { number: port, name: `https-${port}`, protocol: 'HTTPS' }, hosts: ['*'], tls: { mode: 'SIMPLE', serverCertificate: 'edge.crt', privateKey: 'edge.key' } } : { port: { number: port, name: `http-${port}`, protocol: 'HTTP' }, hosts: ['*'] };
  return { ...gateway(name, port), metadata: { name, namespace: 'default', annotations }, spec: { selector: { istio: 'ingressgateway' }, servers: [server] } };
}

beforeAll(async () => {
  echo = await startEcho('edge');
  ca = createCa('edge-ca');
  const cert = ca.issue('edge', { sans: [`DNS:${HOST}`] });
  [ports.uws, ports.strict, tlsPorts.uws, tlsPorts.strict] = (await freePorts(4)) as [number, number, number, number];
  const strict = { 'gatehouse.io/http1-engine': 'strict' };
  const h1 = { 'gatehouse.io/alpn': 'http/1.1' };
  gw = await startGateway({
    files: {
      'edge.crt': cert.certPem,
      'edge.key': cert.keyPem,
      'config.yaml': yamlDocs(
        annotatedGateway('gw', ports.uws, {}),
        annotatedGateway('gw-strict', ports.strict, strict),
        annotatedGateway('gw-tls', tlsPorts.uws, h1, true),
        annotatedGateway('gw-tls-strict', tlsPorts.strict, { ...h1, ...strict }, true),
        ...service('edge', { v1: echo.port }),
        virtualService('edge', [HOST], [{ route: [dest('edge')] }], { gateways: ['gw', 'gw-strict', 'gw-tls', 'gw-tls-strict'] }),
      ),
    },
  });
  // Every row on both engines at once: one watch window for the whole table.
  const h = `Host: ${HOST}\r\n`;
  const table = (rows: Row[], into: Results, tls: boolean): Array<Promise<void>> =>
    rows.map(async (row) => {
      const i = ROWS.indexOf(row);
      const run = async (engine: Engine): Promise<{ seen: Seen; prefix: string }> => {
        const prefix = `/${tls ? 'tls-' : ''}${engine}/${i}`;
        return { seen: await exchange(tls ? tlsPorts[engine] : ports[engine], row.send(prefix, h), tls), prefix };
      };
      const [uws, strict] = await Promise.all([run('uws'), run('strict')]);
      into.set(row.name, { uws, strict });
    });
  const tlsRows = ROWS.filter((r) => TLS_ROWS.includes(r.name));
  expect(tlsRows).toHaveLength(TLS_ROWS.length);
  await Promise.all([...table(ROWS, results, false), ...table(tlsRows, tlsResults, true)]);
});

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
  ca?.remove();
});

/** One test per row and engine: the outcome the row expects. */
function rowTests(rows: Row[], from: Results): void {
  for (const row of rows) {
    for (const engine of ['uws', 'strict'] as const) {
      it(`${row.name} — ${engine}`, () => {
        const r = from.get(row.name)![engine];
        const want = typeof row[engine] === 'function' ? (row[engine] as (p: string) => Outcome)(r.prefix) : (row[engine] as Outcome);
        const got = outcome(r.seen, r.prefix);
        expect({ statuses: got.statuses, closed: got.closed }, r.seen.data.slice(0, 300)).toEqual({ statuses: want.statuses, closed: want.closed });
        if (want.forwarded !== undefined) expect(got.forwarded).toBe(want.forwarded);
        if (want.urls) expect(got.urls).toEqual(want.urls);
      });
    }
  }
}

describe('HTTP/1.1 engines: the same malformed and edge inputs to uWS and to the strict engine', () => {
  it('the two ports are served by the two engines (uWS; node:http for the annotated Gateway)', async () => {
    const rows = JSON.parse((await gw.admin('/listeners?format=json')).text).listener_statuses as Array<{ address: string; engine: string }>;
    expect(rows.find((r) => r.address === `127.0.0.1:${ports.uws}`)?.engine).toBe('uWS');
    expect(rows.find((r) => r.address === `127.0.0.1:${ports.strict}`)?.engine).toBe('node:http');
  });

  rowTests(ROWS, results);

  it('no engine ever forwards a smuggled request', () => {
    expect(echo.requests.filter((r) => r.url.endsWith('/smuggled')).map((r) => r.url)).toEqual([]);
  });

  it('neither engine fingerprints its responses (no uWebSockets header); both send server: istio-envoy and a Date', async () => {
    for (const engine of ['uws', 'strict'] as const) {
      const r = await http(ports[engine], '/fingerprint', { headers: { host: HOST } });
      expect(r.status).toBe(200);
      expect(r.headers.uwebsockets).toBeUndefined();
      expect(r.headers.server).toBe('istio-envoy');
      expect(r.headers.date).toBeDefined();
    }
  });

  it('both engines keep serving after the whole table', async () => {
    for (const engine of ['uws', 'strict'] as const) {
      const r = await http(ports[engine], `/${engine}/alive`, { headers: { host: HOST } });
      expect(r.status).toBe(200);
      expect(r.json.url).toBe(`/${engine}/alive`);
    }
    expect(gw.proc.exitCode).toBeNull();
  });
});

describe('HTTPS (SIMPLE, narrowed to HTTP/1.1): the same rows over TLS', () => {
  it('the uWS TLS port and the strict one (node:http, HTTP/1.1 only by ALPN)', async () => {
    const rows = JSON.parse((await gw.admin('/listeners?format=json')).text).listener_statuses as Array<{ address: string; engine: string; protocol: string }>;
    expect(rows.find((r) => r.address === `127.0.0.1:${tlsPorts.uws}`)).toMatchObject({ engine: 'uWS', protocol: 'HTTPS (HTTP/1.1)' });
    expect(rows.find((r) => r.address === `127.0.0.1:${tlsPorts.strict}`)).toMatchObject({ engine: 'node:http', protocol: 'HTTPS (HTTP/1.1)' });
  });

  rowTests(
    ROWS.filter((r) => TLS_ROWS.includes(r.name)),
    tlsResults,
  );
});

describe('changing the engine of a port without a restart', () => {
  it('annotating the Gateway moves its port to the strict engine on the next reload, and removing the annotation moves it back', async () => {
    const port = (await freePorts(1))[0]!;
    const config = (annotations: Record<string, string>): string =>
      yamlDocs(annotatedGateway('gw', port, annotations), ...service('edge', { v1: echo.port }), virtualService('edge', [HOST], [{ route: [dest('edge')] }]));
    const g = await startGateway({ files: { 'config.yaml': config({}) } });
    const engine = async (): Promise<string | undefined> => (JSON.parse((await g.admin('/listeners?format=json')).text).listener_statuses as Array<{ address: string; engine: string }>).find((r) => r.address === `127.0.0.1:${port}`)?.engine;
    const bad = `GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-A : b\r\n\r\n`;
    try {
      expect(await engine()).toBe('uWS');
      g.writeFile('config.yaml', config({ 'gatehouse.io/http1-engine': 'strict' }));
      await waitFor(async () => (await engine()) === 'node:http', 5000);
      await waitFor(async () => (await http(port, '/moved', { headers: { host: HOST } })).status === 200, 5000);
      expect(rawStatus((await exchange(port, bad)).data)).toBe(400);
      g.writeFile('config.yaml', config({}));
      await waitFor(async () => (await engine()) === 'uWS', 5000);
      await waitFor(async () => (await http(port, '/back', { headers: { host: HOST } })).status === 200, 5000);
    } finally {
      await g.stop();
    }
  });
});

