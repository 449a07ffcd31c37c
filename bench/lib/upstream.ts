// The upstream every target sends to, in a child process of its own (bench/upstream-main.ts, so
// that its CPU is not mixed with the client's): uWS HTTP (and HTTPS when the bench passes a
// certificate) and a grpc-js server. The bench side starts it and asks it over IPC how many POST
// bodies arrived whole.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import uWS from 'uWebSockets.js';
import { REPO } from './common.js';
import { alive, track, type Child } from './proc.js';
import type { CertPaths } from './types.js';
import { BIG_BODY, GRPC_SERVICE, SMALL_BODY } from './wire.js';

// The upstream child learns where the self-signed certificate is from these (set by the bench).
const ENV_CERT = 'GATEHOUSE_BENCH_TLS_CERT';
const ENV_KEY = 'GATEHOUSE_BENCH_TLS_KEY';
/** The child's entry point: it calls serveUpstream(). */
const UPSTREAM_MAIN = path.join(REPO, 'bench', 'upstream-main.ts');

export interface Upstream {
  port: number;
  tlsPort?: number;
  h2Port?: number; // node:http2 over TLS (ALPN h2): the h2 scenario's direct target
  grpcPort: number;
  child: Child;
}

// Upstream child: GET / → 100 B, GET /16k → 16 KiB, POST → reads the whole body, answers small.
// The same routes over HTTPS (uWS SSLApp) when the bench passes a certificate, and a grpc-js
// server whose unary /bench.Bench/Echo answers 100 B. With a certificate also a node:http2 TLS
// server (ALPN h2 only) answering every GET with 100 B, the h2 scenario's `direct`.

export function serveUpstream(): void {
  let postCount = 0;
  let postBytes = 0;
  let badPosts = 0;
  const listenSockets: uWS.us_listen_socket[] = [];
  const ok = Buffer.from('ok\n');

  const addRoutes = (app: uWS.TemplatedApp): uWS.TemplatedApp => {
    app.ws('/ws', {
      compression: uWS.DISABLED,
      maxPayloadLength: 1024 * 1024,
      idleTimeout: 120,
      message: (ws, message, isBinary) => {
        ws.send(message, isBinary);
      },
    });
    app.get('/16k', (res) => {
      res.end(BIG_BODY);
    });
    app.get('/*', (res) => {
      res.end(SMALL_BODY);
    });
    app.post('/*', (res, req) => {
      const declared = req.getHeader('content-length'); // read before returning: req dies after
      const expected = declared === '' ? -1 : Number(declared);
      let received = 0;
      let aborted = false;
      res.onAborted(() => {
        aborted = true;
      });
      res.onData((chunk, isLast) => {
        received += chunk.byteLength;
        if (!isLast) return;
        postCount++;
        postBytes += received;
        if (aborted) return;
        const good = expected < 0 || expected === received;
        if (!good) badPosts++;
        res.cork(() => {
          if (good) res.end(ok);
          else res.writeStatus('400 Bad Request').end('body length mismatch\n');
        });
      });
    });
    app.any('/*', (res) => {
      res.writeStatus('405 Method Not Allowed').end();
    });
    return app;
  };

  const grpcServer = new grpc.Server();
  grpcServer.addService(GRPC_SERVICE, {
    Echo(_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) {
      cb(null, SMALL_BODY);
    },
  });

  let h2Server: http2.Http2SecureServer | undefined;
  const stop = (): void => {
    for (const t of listenSockets) uWS.us_listen_socket_close(t);
    h2Server?.close();
    grpcServer.forceShutdown();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('disconnect', stop); // the bench process went away: do not linger
  process.on('message', (msg: unknown) => {
    if (msg === 'stats') process.send?.({ kind: 'stats', postCount, postBytes, badPosts });
  });
  const fail = (message: string): void => {
    process.send?.({ kind: 'error', message: `upstream: ${message}` });
    process.exit(1);
  };
  const listen = (app: uWS.TemplatedApp, what: string): Promise<number> =>
    new Promise((resolve) => {
      app.listen('127.0.0.1', 0, (token) => {
        if (!token) return fail(`${what} listen on 127.0.0.1 failed`);
        listenSockets.push(token);
        resolve(uWS.us_socket_local_port(token));
      });
    });

  void (async () => {
    const port = await listen(addRoutes(uWS.App()), 'HTTP');
    const cert = process.env[ENV_CERT];
    const key = process.env[ENV_KEY];
    const tlsPort = cert && key ? await listen(addRoutes(uWS.SSLApp({ cert_file_name: cert, key_file_name: key })), 'HTTPS') : undefined;
    let h2Port: number | undefined;
    if (cert && key) {
      const srv = http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) });
      h2Server = srv;
      srv.on('stream', (stream, headers) => {
        stream.on('error', () => undefined);
        if (headers[':method'] !== 'GET') {
          stream.respond({ ':status': 405 });
          stream.end();
          return;
        }
        stream.respond({ ':status': 200, 'content-length': SMALL_BODY.length });
        stream.end(SMALL_BODY);
      });
      h2Port = await new Promise<number>((resolve) => {
        srv.once('error', (err) => fail(`h2 listen: ${err.message}`));
        srv.listen(0, '127.0.0.1', () => resolve((srv.address() as { port: number }).port));
      });
    }
    const grpcPort = await new Promise<number>((resolve) =>
      grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? fail(`gRPC bind: ${err.message}`) : resolve(p))),
    );
    process.send?.({ kind: 'listening', port, tlsPort, h2Port, grpcPort });
  })();
}

// ---------------------------------------------------------------------------------------------
// The bench side

export async function startUpstream(cert: CertPaths | undefined): Promise<Upstream> {
  // The same tsx loader flags (process.execArgv) as this process.
  const proc = spawn(process.execPath, [...process.execArgv, UPSTREAM_MAIN], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, ...(cert ? { [ENV_CERT]: cert.cert, [ENV_KEY]: cert.key } : {}) },
  });
  const child = track('upstream', proc);
  const ports = await new Promise<Omit<Upstream, 'child'>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('upstream: no port after 15 s')), 15_000);
    proc.on('message', (msg: { kind?: string; port?: number; tlsPort?: number; h2Port?: number; grpcPort?: number; message?: string }) => {
      if (msg.kind === 'listening' && typeof msg.port === 'number' && typeof msg.grpcPort === 'number') {
        clearTimeout(timer);
        resolve({ port: msg.port, grpcPort: msg.grpcPort, ...(typeof msg.tlsPort === 'number' ? { tlsPort: msg.tlsPort } : {}), ...(typeof msg.h2Port === 'number' ? { h2Port: msg.h2Port } : {}) });
      } else if (msg.kind === 'error') {
        clearTimeout(timer);
        reject(new Error(msg.message));
      }
    });
    proc.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`upstream exited early (${sig ?? code})`));
    });
  });
  if (cert && ports.tlsPort === undefined) throw new Error('upstream: no HTTPS port');
  return { ...ports, child };
}

export function upstreamStats(child: Child): Promise<{ postCount: number; postBytes: number; badPosts: number } | undefined> {
  return new Promise((resolve) => {
    if (!alive(child) || !child.proc.connected) return resolve(undefined);
    const timer = setTimeout(() => resolve(undefined), 2000);
    const onMsg = (msg: { kind?: string; postCount: number; postBytes: number; badPosts: number }): void => {
      if (msg.kind !== 'stats') return;
      clearTimeout(timer);
      child.proc.off('message', onMsg);
      resolve(msg);
    };
    child.proc.on('message', onMsg);
    child.proc.send('stats');
  });
}
