// The bare uWS + undici reference of PERFORMANCE.md (issue 18's "bare reference" column): one uWS
// App proxying every request to one upstream through an undici Pool driven by `dispatch` with the
// legacy handler methods, no routing, no policy, no metrics, no logs. What a Node proxy costs with
// nothing but the two libraries; the gateway's body-path target is measured against it.
//   node bare-proxy.mjs <listen port> <upstream port>
import uWS from 'uWebSockets.js';
import { Pool } from 'undici';

const [port, upPort] = process.argv.slice(2).map(Number);
const pool = new Pool(`http://127.0.0.1:${upPort}`, { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 });
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'upgrade', 'proxy-connection', 'te', 'trailer']);

function proxy(res, method, path, headers, body) {
  const state = { aborted: false, status: 0, raw: null, chunks: [] };
  res.onAborted(() => (state.aborted = true));
  pool.dispatch(
    { origin: `http://127.0.0.1:${upPort}`, method, path, headers, body },
    {
      onConnect() {},
      onHeaders(status, raw) {
        state.status = status;
        state.raw = raw;
        return true;
      },
      onData(chunk) {
        state.chunks.push(chunk);
        return true;
      },
      onComplete() {
        if (state.aborted) return;
        const raw = state.raw;
        res.cork(() => {
          res.writeStatus(String(state.status));
          for (let i = 0; i < raw.length; i += 2) {
            if (!HOP.has(raw[i].toString('latin1').toLowerCase())) res.writeHeader(raw[i], raw[i + 1]);
          }
          res.end(state.chunks.length === 1 ? state.chunks[0] : Buffer.concat(state.chunks));
        });
      },
      onError() {
        if (!state.aborted) res.cork(() => res.writeStatus('502 Bad Gateway').end());
      },
    },
  );
}

uWS
  .App()
  .any('/*', (res, req) => {
    const method = req.getCaseSensitiveMethod();
    const q = req.getQuery();
    const path = q ? `${req.getUrl()}?${q}` : req.getUrl();
    const headers = [];
    req.forEach((k, v) => {
      if (!HOP.has(k)) headers.push(k, v);
    });
    const length = Number(req.getHeader('content-length') || 0);
    if (length === 0) return proxy(res, method, path, headers, null);
    // The body, copied out of uWS's lent memory, then sent upstream in one piece.
    const body = Buffer.allocUnsafe(length);
    let at = 0;
    let aborted = false;
    res.onAborted(() => (aborted = true));
    res.onData((ab, last) => {
      body.set(new Uint8Array(ab), at);
      at += ab.byteLength;
      if (last && !aborted) {
        headers.push('content-length', String(length));
        proxy(res, method, path, headers, body);
      }
    });
  })
  .listen('127.0.0.1', port, (token) => {
    if (!token) {
      process.stderr.write(`bare proxy: cannot listen on ${port}\n`);
      process.exit(1);
    }
    process.stdout.write(`bare proxy on ${port} → ${upPort}\n`);
  });
