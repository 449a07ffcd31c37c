// Loopback plumbing: free ports, one plain request on a fresh connection (the readiness and
// sanity checks), waiting for a started child to answer.
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { TLSSocket } from 'node:tls';
import { sleep } from './common.js';
import { alive, tail, type Child } from './proc.js';
import { HOST } from './wire.js';

/** Distinct free TCP ports on 127.0.0.1 (all held open until every one is chosen). */
export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  const ports: number[] = [];
  for (let i = 0; i < n; i++) {
    const srv = net.createServer();
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => resolve());
    });
    servers.push(srv);
    ports.push((srv.address() as net.AddressInfo).port);
  }
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

export interface Reply {
  status: number;
  body: Buffer;
  tls?: string; // "TLSv1.3 TLS_AES_256_GCM_SHA384" for TLS requests
}

/** One request on a fresh connection; `tls`: HTTPS with SNI bench.local, certificate not verified. */
export function request(port: number, method: string, urlPath: string, body?: Buffer, host = HOST, tls = false, extra: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const opts: https.RequestOptions = {
      host: '127.0.0.1',
      port,
      method,
      path: urlPath,
      headers: { host, ...extra, ...(body ? { 'content-length': String(body.length) } : {}) },
      agent: false,
      timeout: 5000,
      ...(tls ? { servername: HOST, rejectUnauthorized: false } : {}),
    };
    const req = (tls ? https : http).request(opts, (res) => {
      const chunks: Buffer[] = [];
      const sock = res.socket as TLSSocket;
      const tlsInfo = tls ? `${sock.getProtocol?.() ?? '?'} ${sock.getCipher?.()?.name ?? '?'}` : undefined;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), ...(tlsInfo ? { tls: tlsInfo } : {}) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${method} 127.0.0.1:${port}${urlPath}`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Polls `GET urlPath` until it answers 200; throws with the child's log tail when it exits or times out. */
export async function waitReady(child: Child, port: number, urlPath: string, host: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (!alive(child)) {
      throw new Error(`${child.name} exited (${child.proc.signalCode ?? child.proc.exitCode}) before it was ready\n${tail(child.logFile)}`);
    }
    try {
      const r = await request(port, 'GET', urlPath, undefined, host);
      if (r.status === 200) return;
      last = `HTTP ${r.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`${child.name}: not ready after ${timeoutMs / 1000} s (${last})\n${tail(child.logFile)}`);
}
