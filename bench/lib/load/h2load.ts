// h2load (nghttp2's C load generator, Debian's nghttp2-client): the h2 scenario (TLS, ALPN h2)
// and, by default, the grpc scenario (h2c with prior knowledge, unary calls as POSTs with a
// gRPC-framed body). One thread, like wrk; it costs far less CPU per request than the grpc-js loop.
import fs from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { cpuSnapshot, findOnPath, tail } from '../proc.js';
import { scHost, type Sample, type Scenario, type Settings, type Target } from '../types.js';
import { GRPC_CHANNELS, GRPC_HOST, GRPC_MAX_INFLIGHT, GRPC_REQUEST, HOST } from '../wire.js';
import { closeSample, Latencies, portFor, runLoadTool } from './measure.js';

/** Connections × streams per connection: h2 = one stream on each of `connections` (as `get`); gRPC = as the grpc-js loop. */
export function h2Shape(s: Settings, sc: Scenario): { clients: number; streams: number } {
  if (sc.kind === 'grpc') {
    const inflight = Math.min(s.connections, GRPC_MAX_INFLIGHT);
    const clients = Math.min(GRPC_CHANNELS, inflight);
    return { clients, streams: Math.max(1, Math.floor(inflight / clients)) };
  }
  return { clients: s.connections, streams: 1 };
}

/** The gRPC request body: the 5-byte length-prefixed message frame (uncompressed) + 100 B. */
function grpcBodyFile(): string {
  const file = path.join(os.tmpdir(), `gatehouse-bench-grpc-${process.pid}.bin`);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(GRPC_REQUEST.length, 1);
  fs.writeFileSync(file, Buffer.concat([head, GRPC_REQUEST]));
  return file;
}

export async function loadH2load(s: Settings, target: Target, sc: Scenario, seconds: number): Promise<Sample> {
  const bin = findOnPath('h2load');
  if (!bin) throw new Error('h2load: not on PATH (apt-get install nghttp2-client)');
  const port = portFor(target, sc);
  const { clients, streams } = h2Shape(s, sc);
  const logFile = path.join(os.tmpdir(), `gatehouse-bench-h2load-${process.pid}.log`);
  fs.rmSync(logFile, { force: true });
  const args = ['-t1', `-c${clients}`, `-m${streams}`, '-D', `${seconds}`, `--log-file=${logFile}`];
  if (sc.kind === 'grpc') {
    args.push('-d', grpcBodyFile(), '-H', `:authority: ${GRPC_HOST}`, '-H', 'content-type: application/grpc', '-H', 'te: trailers');
    args.push(`http://127.0.0.1:${port}${sc.path}`);
  } else {
    // The URL's host is the SNI (h2load sends none for an IP); --connect-to dials 127.0.0.1.
    args.push('-H', `:authority: ${scHost(sc)}`, `--connect-to=127.0.0.1:${port}`);
    for (const [k, v] of Object.entries(sc.headers ?? {})) args.push('-H', `${k}: ${v}`);
    args.push(`https://${HOST}:${port}${sc.path}`);
  }
  const pid = target.child?.pid;
  const cpuBefore = pid !== undefined ? cpuSnapshot(pid) : undefined;
  const { out, code, wall, clientSec } = await runLoadTool(bin, args);
  // CPU is read at exit: h2load's window is its -D seconds plus connection setup (64 TLS
  // handshakes: a few ms) and the last responses.
  if (code !== 0) throw new Error(`h2load exited ${code}: ${out.trim().slice(-500)}`);
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  const fin = /finished in ([\d.]+)(ms|s),/.exec(out);
  if (!m || !codes) throw new Error(`h2load: unexpected output: ${out.trim().slice(-500)}`);
  // Responses by status class (h2load's `done` can differ by a few from their sum at the window's end).
  const ok2xx = Number(codes[1]);
  const other = Number(codes[2]) + Number(codes[3]) + Number(codes[4]);
  const done = ok2xx + other;
  const failed = Number(m[5]) + Number(m[6]) + Number(m[7]);
  // Latencies of 2xx responses from the per-request log (start µs, status, µs to the end).
  const lat = new Latencies();
  if (fs.existsSync(logFile)) {
    for (const line of fs.readFileSync(logFile, 'utf8').split('\n')) {
      const [, status, us] = line.split('\t');
      if (status && Number(status) >= 200 && Number(status) < 300) lat.add(Number(us) / 1000);
    }
    fs.rmSync(logFile, { force: true });
  }
  const [p50 = NaN, p99 = NaN] = lat.percentiles([50, 99]);
  const duration = fin ? Number(fin[1]) / (fin[2] === 'ms' ? 1000 : 1) : seconds;
  const sample: Sample = {
    reqs: done,
    rps: ok2xx / duration,
    p50,
    p99,
    non2xx: other,
    errors: failed,
    clientCpuPct: (clientSec / wall) * 100,
  };
  return closeSample(sample, target, sc, cpuBefore, done);
}

/** One h2 GET before measuring (ALPN h2, SNI bench.local): 200 with the expected length. */
export async function checkH2(target: Target, sc: Scenario, notes: string[]): Promise<void> {
  const port = portFor(target, sc);
  const fail = (msg: string): Error =>
    new Error(`${target.name}: h2 ${sc.method} ${sc.path} on 127.0.0.1:${port} ${msg}` + (target.child?.logFile ? `\n${tail(target.child.logFile)}` : ''));
  const session = http2.connect(`https://127.0.0.1:${port}`, { servername: HOST, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
  try {
    const r = await new Promise<{ status: number; body: Buffer; alpn: string }>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('timeout')), 5000);
      session.on('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
      const req = session.request({ ':method': sc.method, ':path': sc.path, ':authority': scHost(sc), ...(sc.headers ?? {}) });
      let status = 0;
      const chunks: Buffer[] = [];
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        clearTimeout(t);
        resolve({ status, body: Buffer.concat(chunks), alpn: String(session.alpnProtocol) });
      });
      req.on('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
      req.end();
    });
    if (r.status !== 200 || r.body.length !== sc.expectBytes) throw fail(`answered ${r.status} with ${r.body.length} B, expected 200 with ${sc.expectBytes} B`);
    notes.push(`${sc.id}: ${target.name} negotiated ALPN ${r.alpn}.`);
  } catch (err) {
    if ((err as Error).message.startsWith(`${target.name}: h2`)) throw err;
    throw fail(`failed: ${(err as Error).message}`);
  } finally {
    session.close();
  }
}
