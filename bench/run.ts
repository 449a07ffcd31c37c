/**
 * Gatehouse benchmark: the same load against the upstream directly, through Gatehouse and (when
 * `nginx` is on PATH) through nginx, interleaved round by round so drift hits every target alike.
 *
 *   npm run bench                       (builds dist/, then runs this file with tsx)
 *   BENCH_ROUNDS=3 BENCH_DURATION=10 npm run bench
 *
 * Processes: this one is the load generator (autocannon in-process; a grpc-js loop for the gRPC
 * scenario). The upstream is this same file started again as a child (`--upstream`: HTTP, HTTPS
 * and gRPC listeners), so its CPU is not mixed with the client's. The gateway and nginx are
 * children too. Every child is stopped by its PID, also on errors and ^C.
 * See bench/README.md for the knobs and for how to read the numbers.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import type { TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
// autocannon 9 ships no type declarations (@types/autocannon is not installed); the few fields
// used here are typed below as `Autocannon`.
// @ts-ignore -- untyped CommonJS module
import autocannon from 'autocannon';
import uWS from 'uWebSockets.js';

const SELF = fileURLToPath(import.meta.url);
const REPO = path.resolve(path.dirname(SELF), '..');
const HOST = 'bench.local';
const SMALL_BODY = Buffer.alloc(100, 'g'); // GET /
const BIG_BODY = Buffer.alloc(16 * 1024, 'k'); // GET /16k
const POST_SIZE = 64 * 1024;
const GRPC_HOST = 'grpc.bench.local'; // :authority of the gRPC clients (the gateway routes on it)
const GRPC_PATH = '/bench.Bench/Echo';
const GRPC_REQUEST = Buffer.alloc(100, 'q');
const GRPC_CHANNELS = 4; // separate grpc.Client objects, one HTTP/2 connection each
const GRPC_MAX_INFLIGHT = 64; // total calls in flight: min(BENCH_CONNECTIONS, this)
// The upstream child learns where the self-signed certificate is from these (set by the bench).
const ENV_CERT = 'GATEHOUSE_BENCH_TLS_CERT';
const ENV_KEY = 'GATEHOUSE_BENCH_TLS_KEY';

// gRPC without protos: messages are raw bytes (identity serialisers).
const raw = (b: Buffer): Buffer => b;
const GRPC_SERVICE: grpc.ServiceDefinition = {
  Echo: { path: GRPC_PATH, requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
};

// ---------------------------------------------------------------------------------------------
// autocannon: the part of its programmatic API this file uses.

interface AcOptions {
  url: string;
  connections: number;
  duration: number;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body?: Buffer;
  timeout: number;
  servername?: string; // SNI for https:// URLs (autocannon never verifies the certificate)
}
interface AcResult {
  duration: number; // seconds, measured
  errors: number;
  timeouts: number;
  non2xx: number;
  requests: { total: number; sent: number };
  statusCodeStats: Record<string, { count: number }>;
}
interface AcInstance extends PromiseLike<AcResult> {
  on(event: 'response', fn: (client: unknown, status: number, bytes: number, ms: number) => void): void;
  stop(): void;
}
type Autocannon = (opts: AcOptions) => AcInstance;
const runAutocannon = autocannon as unknown as Autocannon;

// ---------------------------------------------------------------------------------------------
// Upstream child: GET / → 100 B, GET /16k → 16 KiB, POST → reads the whole body, answers small.
// The same routes over HTTPS (uWS SSLApp) when the bench passes a certificate, and a grpc-js
// server whose unary /bench.Bench/Echo answers 100 B.

function runUpstream(): void {
  let postCount = 0;
  let postBytes = 0;
  let badPosts = 0;
  const listenSockets: uWS.us_listen_socket[] = [];
  const ok = Buffer.from('ok\n');

  const addRoutes = (app: uWS.TemplatedApp): uWS.TemplatedApp => {
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

  const stop = (): void => {
    for (const t of listenSockets) uWS.us_listen_socket_close(t);
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
    const grpcPort = await new Promise<number>((resolve) =>
      grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? fail(`gRPC bind: ${err.message}`) : resolve(p))),
    );
    process.send?.({ kind: 'listening', port, tlsPort, grpcPort });
  })();
}

// ---------------------------------------------------------------------------------------------
// Settings

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got ${raw}`);
  return n;
}
function envList(name: string): string[] | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  return raw.split(/[\s,]+/).filter((s) => s !== '');
}

type TargetName = 'direct' | 'gateway' | 'nginx';
const TARGET_ORDER: TargetName[] = ['direct', 'gateway', 'nginx'];

interface Scenario {
  id: string;
  title: string;
  /** http (default): autocannon over HTTP/1.1; https: the same over TLS; grpc: the grpc-js loop. */
  kind?: 'http' | 'https' | 'grpc';
  method: 'GET' | 'POST';
  path: string;
  body?: Buffer;
  headers?: Record<string, string>;
  expectBytes: number; // response body length that the sanity check expects
}
const SCENARIOS: Scenario[] = [
  { id: 'get', title: 'GET 100 B', method: 'GET', path: '/', expectBytes: SMALL_BODY.length },
  { id: 'get16k', title: 'GET 16 KiB', method: 'GET', path: '/16k', expectBytes: BIG_BODY.length },
  { id: 'post64k', title: 'POST 64 KiB', method: 'POST', path: '/upload', body: Buffer.alloc(POST_SIZE, 'p'), expectBytes: 3 },
  // The same small GET through a route carrying rewrite + request/response header edits + retries,
  // to a cluster with consistent hashing on a header (direct: the upstream answers /policy/* too).
  { id: 'policy', title: 'GET 100 B, full policy', method: 'GET', path: '/policy/item', headers: { 'x-user': 'bench-user' }, expectBytes: SMALL_BODY.length },
  // TLS terminated by the target (keep-alive: record overhead, hardly any handshakes).
  { id: 'https', title: 'GET 100 B over HTTPS', kind: 'https', method: 'GET', path: '/', expectBytes: SMALL_BODY.length },
  // Unary gRPC (100 B request, 100 B answer) from grpc-js clients; req/s = OK calls/s.
  { id: 'grpc', title: 'gRPC unary, 100 B', kind: 'grpc', method: 'POST', path: GRPC_PATH, expectBytes: SMALL_BODY.length },
];

interface Settings {
  rounds: number;
  duration: number;
  warmup: number;
  connections: number;
  scenarios: Scenario[];
  targets: TargetName[];
  gatewayCli: string;
  gatewayArgs: string[];
  gatewayNodeArgs: string[];
  readyTimeoutMs: number;
  keepTmp: boolean;
}

function readSettings(): Settings {
  const scenarioIds = envList('BENCH_SCENARIOS');
  const scenarios = scenarioIds ? SCENARIOS.filter((s) => scenarioIds.includes(s.id)) : SCENARIOS;
  if (scenarios.length === 0) {
    throw new Error(`BENCH_SCENARIOS matches none of: ${SCENARIOS.map((s) => s.id).join(', ')}`);
  }
  const targetNames = envList('BENCH_TARGETS');
  for (const t of targetNames ?? []) {
    if (!TARGET_ORDER.includes(t as TargetName)) throw new Error(`BENCH_TARGETS: unknown target ${t}`);
  }
  return {
    rounds: Math.max(1, Math.round(envNumber('BENCH_ROUNDS', 2))),
    duration: Math.max(1, envNumber('BENCH_DURATION', 5)),
    warmup: envNumber('BENCH_WARMUP', 1),
    connections: Math.max(1, Math.round(envNumber('BENCH_CONNECTIONS', 64))),
    scenarios,
    targets: targetNames ? TARGET_ORDER.filter((t) => targetNames.includes(t)) : TARGET_ORDER,
    gatewayCli: path.resolve(REPO, process.env['BENCH_GATEWAY_CLI'] ?? 'dist/cli.js'),
    gatewayArgs: envList('BENCH_GATEWAY_ARGS') ?? [],
    gatewayNodeArgs: envList('BENCH_GATEWAY_NODE_ARGS') ?? [],
    readyTimeoutMs: envNumber('BENCH_READY_TIMEOUT', 30) * 1000,
    keepTmp: process.env['BENCH_KEEP_TMP'] === '1',
  };
}

// ---------------------------------------------------------------------------------------------
// Child processes: tracked by PID, stopped by PID.

interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  logFile?: string;
}
const children: Child[] = [];

function alive(c: Child): boolean {
  return c.proc.exitCode === null && c.proc.signalCode === null;
}

function track(name: string, proc: ChildProcess, logFile?: string): Child {
  if (proc.pid === undefined) throw new Error(`${name}: failed to start`);
  const child: Child = { name, proc, pid: proc.pid, ...(logFile ? { logFile } : {}) };
  children.push(child);
  proc.on('error', (err) => {
    process.stderr.write(`${name} (pid ${child.pid}): ${err.message}\n`);
  });
  return child;
}

async function stopChild(c: Child): Promise<void> {
  if (!alive(c)) return;
  const exited = new Promise<void>((resolve) => c.proc.once('exit', () => resolve()));
  try {
    process.kill(c.pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  const t = setTimeout(() => {
    try {
      if (alive(c)) process.kill(c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }, 3000);
  await exited;
  clearTimeout(t);
}

async function stopAll(): Promise<void> {
  await Promise.all(children.map(stopChild));
}

process.on('exit', () => {
  for (const c of children) {
    try {
      if (alive(c)) process.kill(c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

function tail(file: string | undefined, lines = 20): string {
  if (!file) return '';
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------------------------------------
// /proc accounting for a process and its descendants (nginx workers, if any).

const CLK_TCK = (() => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

interface Stat {
  ppid: number;
  ticks: number; // utime + stime
}

function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ... utime stime ...": comm may hold spaces, so split after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
}

function processTree(root: number): number[] {
  const byParent = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const st = readStat(Number(entry));
    if (!st) continue;
    const list = byParent.get(st.ppid) ?? [];
    list.push(Number(entry));
    byParent.set(st.ppid, list);
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(byParent.get(out[i] as number) ?? []));
  return out;
}

/** CPU time of the process tree, pid → seconds. */
function cpuSnapshot(root: number): Map<number, number> {
  const snap = new Map<number, number>();
  for (const pid of processTree(root)) {
    const st = readStat(pid);
    if (st) snap.set(pid, st.ticks / CLK_TCK);
  }
  return snap;
}

function cpuDelta(before: Map<number, number>, after: Map<number, number>): number {
  let s = 0;
  for (const [pid, t] of after) s += t - (before.get(pid) ?? 0);
  return s;
}

/** Peak resident set (VmHWM) of the tree, in MiB. */
function peakRssMiB(root: number): number {
  let kb = 0;
  for (const pid of processTree(root)) {
    try {
      const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m?.[1]) kb += Number(m[1]);
    } catch {
      /* exited */
    }
  }
  return kb / 1024;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Distinct free TCP ports on 127.0.0.1 (all held open until every one is chosen). */
async function freePorts(n: number): Promise<number[]> {
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

interface Reply {
  status: number;
  body: Buffer;
  tls?: string; // "TLSv1.3 TLS_AES_256_GCM_SHA384" for TLS requests
}

/** One request on a fresh connection; `tls`: HTTPS with SNI bench.local, certificate not verified. */
function request(port: number, method: string, urlPath: string, body?: Buffer, host = HOST, tls = false): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const opts: https.RequestOptions = {
      host: '127.0.0.1',
      port,
      method,
      path: urlPath,
      headers: { host, ...(body ? { 'content-length': String(body.length) } : {}) },
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

function findOnPath(bin: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, bin);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

// ---------------------------------------------------------------------------------------------
// Starting the three targets

interface Target {
  name: TargetName;
  port: number; // HTTP/1.1
  tlsPort?: number; // HTTPS (only when the https scenario runs)
  grpcPort: number; // h2c gRPC
  child?: Child; // CPU/RSS are measured for targets that are our children (gateway, nginx)
}

interface Upstream {
  port: number;
  tlsPort?: number;
  grpcPort: number;
  child: Child;
}

interface CertPaths {
  cert: string;
  key: string;
}

/** A self-signed EC P-256 certificate for bench.local, in the temp dir. */
function makeCert(tmp: string): CertPaths {
  const cert = path.join(tmp, 'bench.crt');
  const key = path.join(tmp, 'bench.key');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${HOST}`, '-addext', `subjectAltName=DNS:${HOST}`, '-keyout', key, '-out', cert],
    { cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return { cert, key };
}

async function startUpstream(cert: CertPaths | undefined): Promise<Upstream> {
  // Same file, same tsx loader flags (process.execArgv), upstream mode.
  const proc = spawn(process.execPath, [...process.execArgv, SELF, '--upstream'], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, ...(cert ? { [ENV_CERT]: cert.cert, [ENV_KEY]: cert.key } : {}) },
  });
  const child = track('upstream', proc);
  const ports = await new Promise<Omit<Upstream, 'child'>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('upstream: no port after 15 s')), 15_000);
    proc.on('message', (msg: { kind?: string; port?: number; tlsPort?: number; grpcPort?: number; message?: string }) => {
      if (msg.kind === 'listening' && typeof msg.port === 'number' && typeof msg.grpcPort === 'number') {
        clearTimeout(timer);
        resolve({ port: msg.port, grpcPort: msg.grpcPort, ...(typeof msg.tlsPort === 'number' ? { tlsPort: msg.tlsPort } : {}) });
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

function upstreamStats(child: Child): Promise<{ postCount: number; postBytes: number; badPosts: number } | undefined> {
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

interface GatewayPorts {
  http: number;
  https?: number; // with cert
  grpc: number;
}

function gatewayConfig(ports: GatewayPorts, up: Upstream, cert: CertPaths | undefined): string {
  const httpsServer =
    ports.https !== undefined && cert
      ? `
    - port: { number: ${ports.https}, protocol: HTTPS, name: https }
      hosts: ['*']
      tls: { mode: SIMPLE, serverCertificate: ${JSON.stringify(cert.cert)}, privateKey: ${JSON.stringify(cert.key)} }`
      : '';
  // The GRPC server is a Gateway of its own: an HTTPS port whose routes reach a GRPC service
  // offers h2 by ALPN and is then served by node:http2 instead of uWS, so binding the gRPC
  // VirtualService to bench-gateway would move the https scenario off the uWS TLS path.
  return `# written by bench/run.ts
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-gateway
  namespace: bench
spec:
  selector: {}
  servers:
    - port: { number: ${ports.http}, protocol: HTTP, name: http }
      hosts: ['*']${httpsServer}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-grpc-gateway
  namespace: bench
spec:
  selector: {}
  servers:
    - port: { number: ${ports.grpc}, protocol: GRPC, name: grpc }
      hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench-grpc
  namespace: bench
spec:
  hosts: ['${GRPC_HOST}']
  gateways: [bench-grpc-gateway]
  http:
    - route:
        - destination:
            host: grpc-upstream.bench.svc.cluster.local
            port: { number: 50051 }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: grpc-upstream
  namespace: bench
spec:
  hosts: [grpc-upstream.bench.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
    - { number: 50051, name: grpc, protocol: GRPC }
  endpoints:
    - address: 127.0.0.1
      ports: { grpc: ${up.grpcPort} }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench
  namespace: bench
spec:
  hosts: ['${HOST}']
  gateways: [bench-gateway]
  http:
    - name: policy
      match: [{ uri: { prefix: /policy/ } }]
      rewrite: { uri: /rewritten/ }
      headers:
        request:
          set: { x-bench-route: policy }
          remove: [x-remove-me]
        response:
          set: { x-bench-policy: applied }
      retries: { attempts: 2, perTryTimeout: 2s, retryOn: "5xx,connect-failure" }
      timeout: 10s
      route:
        - destination:
            host: upstream.bench.svc.cluster.local
            subset: hashed
            port: { number: 80 }
    - route:
        - destination:
            host: upstream.bench.svc.cluster.local
            port: { number: 80 }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: upstream
  namespace: bench
spec:
  hosts: [upstream.bench.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
    - { number: 80, name: http, protocol: HTTP }
  endpoints:
    - address: 127.0.0.1
      ports: { http: ${up.port} }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: upstream
  namespace: bench
spec:
  host: upstream.bench.svc.cluster.local
  subsets:
    - name: hashed
      trafficPolicy:
        loadBalancer:
          consistentHash: { httpHeaderName: x-user }
`;
}

async function waitReady(child: Child, port: number, urlPath: string, host: string, timeoutMs: number): Promise<void> {
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

async function startGateway(s: Settings, tmp: string, up: Upstream, cert: CertPaths | undefined): Promise<Target> {
  if (!fs.existsSync(s.gatewayCli)) {
    throw new Error(`${path.relative(REPO, s.gatewayCli)} not found: run \`npm run build\` (npm run bench does), or drop gateway from BENCH_TARGETS`);
  }
  const [port, adminPort, tlsPort, grpcPort] = (await freePorts(4)) as [number, number, number, number];
  const ports: GatewayPorts = { http: port, grpc: grpcPort, ...(cert ? { https: tlsPort } : {}) };
  const configDir = path.join(tmp, 'gateway-config');
  fs.mkdirSync(configDir);
  fs.writeFileSync(path.join(configDir, 'bench.yaml'), gatewayConfig(ports, up, cert));
  const logFile = path.join(tmp, 'gateway.log');
  const log = fs.openSync(logFile, 'a');
  const args = [
    ...s.gatewayNodeArgs,
    s.gatewayCli,
    'run',
    '--config', configDir,
    '--bind', '127.0.0.1',
    '--admin-port', String(adminPort),
    '--admin-bind', '127.0.0.1',
    '--xds-port', '0',
    ...s.gatewayArgs,
  ];
  const proc = spawn(process.execPath, args, { cwd: REPO, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const child = track('gateway', proc, logFile);
  await waitReady(child, adminPort, '/healthz/ready', '127.0.0.1', s.readyTimeoutMs);
  return { name: 'gateway', port, grpcPort, ...(ports.https !== undefined ? { tlsPort: ports.https } : {}), child };
}

/** nginx as a reverse proxy: one process, upstream keepalive. Undefined (with a note) if unusable. */
async function startNginx(tmp: string, up: Upstream, cert: CertPaths | undefined, notes: string[]): Promise<{ target: Target; version: string } | undefined> {
  const bin = findOnPath('nginx');
  if (!bin) {
    notes.push('nginx: not on PATH, skipped (the bench installs nothing).');
    return undefined;
  }
  // `nginx -v` prints its version to stderr.
  const v = spawnSync(bin, ['-v'], { encoding: 'utf8' });
  let version = `${v.stderr ?? ''}${v.stdout ?? ''}`.trim() || 'nginx';
  version = version.replace(/^nginx version:\s*/, '');

  const dir = path.join(tmp, 'nginx');
  fs.mkdirSync(dir);
  for (const sub of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) fs.mkdirSync(path.join(dir, sub));
  const [port, tlsPort, grpcPort] = (await freePorts(3)) as [number, number, number];
  // `http2 on;` exists from 1.25.1; before it (Debian 12 ships 1.22) the flag goes on `listen`.
  const [maj = 0, min = 0, patch = 0] = (/(\d+)\.(\d+)\.(\d+)/.exec(version)?.slice(1) ?? []).map(Number);
  const http2Directive = maj > 1 || (maj === 1 && (min > 25 || (min === 25 && patch >= 1)));
  const proxyToUpstream = `
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;`;
  const tlsServer = cert
    ? `
  server {
    listen 127.0.0.1:${tlsPort} ssl;
    ssl_certificate ${cert.cert};
    ssl_certificate_key ${cert.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {${proxyToUpstream}
    }
  }`
    : '';
  // master_process off: the PID we start is the one process that serves (= "1 worker"), so its
  // /proc/<pid>/stat holds all of nginx's CPU. Every path points into the temp dir.
  const conf = `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  client_body_buffer_size 128k;
  client_max_body_size 1m;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  upstream bench_upstream {
    server 127.0.0.1:${up.port};
    keepalive 64;
    keepalive_requests 1000000;
  }
  upstream grpc_upstream {
    server 127.0.0.1:${up.grpcPort};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port};
    location /policy/ {
      proxy_pass http://bench_upstream/rewritten/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header x-bench-route policy;
      proxy_set_header x-remove-me "";
      proxy_next_upstream error timeout http_502 http_503 http_504;
      proxy_next_upstream_tries 3;
      proxy_read_timeout 10s;
      add_header x-bench-policy applied;
    }
    location / {${proxyToUpstream}
    }
  }${tlsServer}
  server {
    listen 127.0.0.1:${grpcPort}${http2Directive ? ';\n    http2 on' : ' http2'};
    location / {
      grpc_pass grpc://grpc_upstream;
    }
  }
}
`;
  const confFile = path.join(dir, 'nginx.conf');
  fs.writeFileSync(confFile, conf);
  const logFile = path.join(dir, 'stderr.log');
  const log = fs.openSync(logFile, 'a');
  const proc = spawn(bin, ['-p', `${dir}/`, '-e', `${dir}/error.log`, '-c', confFile], { cwd: dir, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const child = track('nginx', proc, logFile);
  try {
    await waitReady(child, port, '/', HOST, 10_000);
  } catch (err) {
    notes.push(`nginx: failed to start, skipped: ${(err as Error).message.split('\n')[0]} ${tail(path.join(dir, 'error.log'), 3)}`);
    await stopChild(child);
    return undefined;
  }
  return { target: { name: 'nginx', port, grpcPort, ...(cert ? { tlsPort } : {}), child }, version };
}

// ---------------------------------------------------------------------------------------------
// Measuring

interface Sample {
  reqs: number;
  rps: number;
  p50: number; // ms
  p99: number; // ms
  non2xx: number;
  errors: number;
  cpuUsPerReq?: number;
  clientCpuPct: number;
  errorDetail?: string; // gRPC: the failed calls by status
}

/** 2xx latencies in ms at autocannon's float precision (its own histogram rounds to whole ms). */
class Latencies {
  private buf = new Float64Array(1 << 16);
  private n = 0;
  add(ms: number): void {
    if (this.n === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.n++] = ms;
  }
  percentiles(ps: number[]): number[] {
    if (this.n === 0) return ps.map(() => NaN);
    const sorted = this.buf.subarray(0, this.n).sort();
    return ps.map((p) => sorted[Math.min(this.n - 1, Math.max(0, Math.ceil((p / 100) * this.n) - 1))] as number);
  }
}

/** The run in progress, stopped on ^C. */
let current: { stop(): void } | undefined;

function portFor(target: Target, sc: Scenario): number {
  if (sc.kind === 'grpc') return target.grpcPort;
  if (sc.kind === 'https') {
    if (target.tlsPort === undefined) throw new Error(`${target.name}: no HTTPS port`);
    return target.tlsPort;
  }
  return target.port;
}

async function load(s: Settings, target: Target, sc: Scenario, seconds: number): Promise<Sample> {
  if (sc.kind === 'grpc') return loadGrpc(s, target, sc, seconds);
  const tls = sc.kind === 'https';
  const lat = new Latencies();
  const pid = target.child?.pid;
  const cpuBefore = pid !== undefined ? cpuSnapshot(pid) : undefined;
  const clientBefore = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const inst = runAutocannon({
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${portFor(target, sc)}${sc.path}`,
    ...(tls ? { servername: HOST } : {}),
    connections: s.connections,
    duration: seconds,
    method: sc.method,
    headers: { host: HOST, ...(sc.body ? { 'content-type': 'application/octet-stream' } : {}), ...(sc.headers ?? {}) },
    ...(sc.body ? { body: sc.body } : {}),
    timeout: 10,
  });
  current = inst;
  inst.on('response', (_client, status, _bytes, ms) => {
    if (status >= 200 && status < 300) lat.add(ms);
  });
  const r = await inst;
  current = undefined;
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const client = process.cpuUsage(clientBefore);
  const reqs = r.requests.total;
  const [p50 = NaN, p99 = NaN] = lat.percentiles([50, 99]);
  const sample: Sample = {
    reqs,
    rps: reqs / r.duration,
    p50,
    p99,
    non2xx: r.non2xx,
    errors: r.errors,
    clientCpuPct: ((client.user + client.system) / 1e6 / wall) * 100,
  };
  if (pid !== undefined && cpuBefore && reqs > 0) {
    sample.cpuUsPerReq = (cpuDelta(cpuBefore, cpuSnapshot(pid)) * 1e6) / reqs;
  }
  if (target.child && !alive(target.child)) {
    throw new Error(`${target.child.name} died during ${sc.title}\n${tail(target.child.logFile)}`);
  }
  return sample;
}

function grpcClient(port: number): grpc.Client {
  return new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    'grpc.use_local_subchannel_pool': 1, // a connection of its own, not shared with the other clients
    'grpc.default_authority': GRPC_HOST,
  });
}

/**
 * One unary call. No per-call deadline: grpc-js arms a timer per deadline, which cost ~30% of the
 * client's throughput here; loadGrpc cancels calls still open 10 s after the window instead.
 */
function grpcCall(client: grpc.Client, cb: (err: grpc.ServiceError | null, value?: Buffer) => void): grpc.ClientUnaryCall {
  return client.makeUnaryRequest(GRPC_PATH, raw, raw, GRPC_REQUEST, new grpc.Metadata(), {}, cb);
}

/**
 * gRPC unary load: GRPC_CHANNELS clients (one HTTP/2 connection each) with min(connections,
 * GRPC_MAX_INFLIGHT) calls in flight in all, each starting the next call when it completes, until
 * the duration is over. Measured like load(): latency of OK calls, CPU of the target tree, client
 * CPU of this process.
 */
async function loadGrpc(s: Settings, target: Target, sc: Scenario, seconds: number): Promise<Sample> {
  const inflight = Math.min(s.connections, GRPC_MAX_INFLIGHT);
  const clients = Array.from({ length: Math.min(GRPC_CHANNELS, inflight) }, () => grpcClient(target.grpcPort));
  try {
    // Connect first (autocannon's connects are in its window too, but cheap; an h2 setup is not).
    await Promise.all(
      clients.map((c) => new Promise<void>((resolve, reject) => c.waitForReady(Date.now() + 5000, (err) => (err ? reject(err) : resolve())))),
    );
    const lat = new Latencies();
    let ok = 0;
    let failed = 0;
    const byStatus = new Map<string, number>();
    const pid = target.child?.pid;
    const cpuBefore = pid !== undefined ? cpuSnapshot(pid) : undefined;
    const clientBefore = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const endAt = performance.now() + seconds * 1000;
    let stopped = false;
    current = {
      stop: () => {
        stopped = true;
      },
    };
    const open = new Set<grpc.ClientUnaryCall>();
    // Like autocannon's 10 s timeout: calls still open 10 s after the window are cancelled.
    const guard = setTimeout(() => {
      for (const call of open) call.cancel();
    }, (seconds + 10) * 1000);
    await new Promise<void>((resolve) => {
      let running = inflight;
      const next = (client: grpc.Client): void => {
        if (stopped || performance.now() >= endAt) {
          if (--running === 0) resolve();
          return;
        }
        const start = performance.now();
        const call = grpcCall(client, (err, value) => {
          open.delete(call);
          if (!err && value?.length === sc.expectBytes) {
            ok++;
            lat.add(performance.now() - start);
          } else {
            failed++;
            const key = err ? `${grpc.status[err.code] ?? err.code}: ${err.details}` : `OK with ${value?.length ?? 0} B`;
            byStatus.set(key, (byStatus.get(key) ?? 0) + 1);
          }
          next(client);
        });
        open.add(call);
      };
      for (let i = 0; i < inflight; i++) next(clients[i % clients.length] as grpc.Client);
    });
    clearTimeout(guard);
    current = undefined;
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const client = process.cpuUsage(clientBefore);
    const reqs = ok + failed;
    const [p50 = NaN, p99 = NaN] = lat.percentiles([50, 99]);
    const sample: Sample = {
      reqs,
      rps: ok / wall,
      p50,
      p99,
      non2xx: 0,
      errors: failed,
      clientCpuPct: ((client.user + client.system) / 1e6 / wall) * 100,
      ...(byStatus.size ? { errorDetail: [...byStatus].map(([k, n]) => `${n}× ${k}`).join('; ') } : {}),
    };
    if (pid !== undefined && cpuBefore && reqs > 0) {
      sample.cpuUsPerReq = (cpuDelta(cpuBefore, cpuSnapshot(pid)) * 1e6) / reqs;
    }
    if (target.child && !alive(target.child)) {
      throw new Error(`${target.child.name} died during ${sc.title}\n${tail(target.child.logFile)}`);
    }
    return sample;
  } finally {
    current = undefined;
    for (const c of clients) c.close();
  }
}

async function sanityCheck(target: Target, sc: Scenario, notes: string[]): Promise<void> {
  if (sc.kind === 'grpc') {
    const client = grpcClient(target.grpcPort);
    try {
      const value = await new Promise<Buffer | undefined>((resolve, reject) => {
        const call = grpcCall(client, (err, v) => {
          clearTimeout(t);
          if (err) reject(err);
          else resolve(v);
        });
        const t = setTimeout(() => call.cancel(), 5000);
      });
      if (value?.length !== sc.expectBytes) throw new Error(`answered OK with ${value?.length ?? 0} B`);
    } catch (err) {
      throw new Error(
        `${target.name}: gRPC ${GRPC_PATH} (authority ${GRPC_HOST}) on 127.0.0.1:${target.grpcPort} failed, expected OK with ${sc.expectBytes} B: ${(err as Error).message}` +
          (target.child?.logFile ? `\n${tail(target.child.logFile)}` : ''),
      );
    } finally {
      client.close();
    }
    return;
  }
  const r = await request(portFor(target, sc), sc.method, sc.path, sc.body, HOST, sc.kind === 'https');
  if (r.tls) notes.push(`${sc.id}: ${target.name} negotiated ${r.tls} (SNI ${HOST}).`);
  if (r.status !== 200 || r.body.length !== sc.expectBytes) {
    const detail = r.body.subarray(0, 200).toString('utf8').replace(/\s+/g, ' ');
    throw new Error(
      `${target.name}: ${sc.method} ${sc.path} (Host: ${HOST}) answered ${r.status} with ${r.body.length} B, expected 200 with ${sc.expectBytes} B: ${detail}` +
        (target.child?.logFile ? `\n${tail(target.child.logFile)}` : ''),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Report

const fmt = (x: number | undefined, digits = 0): string =>
  x === undefined || Number.isNaN(x) ? '–' : x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

interface Row {
  scenario: Scenario;
  target: TargetName;
  samples: Sample[];
  peakRss?: number;
}

function summarize(rows: Row[]) {
  return rows.map((row) => {
    const cpu = row.samples.map((x) => x.cpuUsPerReq).filter((x): x is number => x !== undefined);
    return {
      row,
      rps: median(row.samples.map((x) => x.rps)),
      p50: median(row.samples.map((x) => x.p50)),
      p99: median(row.samples.map((x) => x.p99)),
      non2xx: row.samples.reduce((a, x) => a + x.non2xx, 0),
      errors: row.samples.reduce((a, x) => a + x.errors, 0),
      cpu: cpu.length ? median(cpu) : undefined,
      client: median(row.samples.map((x) => x.clientCpuPct)),
    };
  });
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || !(b > 0) || Number.isNaN(a) ? '–' : `${(a / b).toFixed(2)}×`;
}

function report(s: Settings, rows: Row[], header: string[], notes: string[]): string {
  const sum = summarize(rows);
  const out: string[] = [...header, ''];
  out.push('| scenario | target | req/s | p50 ms | p99 ms | non-2xx | errors | CPU µs/req | peak RSS MiB | client CPU % |');
  out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of sum) {
    out.push(
      `| ${x.row.scenario.title} | ${x.row.target} | ${fmt(x.rps)} | ${fmt(x.p50, 2)} | ${fmt(x.p99, 2)} | ${x.non2xx} | ${x.errors} | ${fmt(x.cpu, 1)} | ${fmt(x.row.peakRss, 0)} | ${fmt(x.client)} |`,
    );
  }
  out.push('');
  out.push(
    `Medians of ${s.rounds} interleaved round(s) of ${s.duration} s, ${s.connections} connections; non-2xx and errors are totals over the rounds. ` +
      'CPU µs/req = (utime+stime of the target process tree over the window) / responses; peak RSS = VmHWM since start. ' +
      'Client CPU % = the bench process, autocannon or the grpc-js loop (100 = one core): near 100 means the client, not the target, is the limit.' +
      (s.scenarios.some((sc) => sc.kind === 'grpc')
        ? ` gRPC: req/s = OK calls/s from ${GRPC_CHANNELS} grpc-js clients (one HTTP/2 connection each) with ${Math.min(s.connections, GRPC_MAX_INFLIGHT)} calls in flight in all; errors = calls that did not end OK with ${SMALL_BODY.length} B.`
        : ''),
  );
  const by = (sc: Scenario, t: TargetName) => sum.find((x) => x.row.scenario === sc && x.row.target === t);
  if (s.targets.includes('gateway')) {
    out.push('', '| scenario | gateway/direct req/s | gateway/nginx req/s | gateway/nginx CPU µs/req | gateway/nginx p99 |');
    out.push('|---|---:|---:|---:|---:|');
    for (const sc of s.scenarios) {
      const g = by(sc, 'gateway');
      const d = by(sc, 'direct');
      const n = by(sc, 'nginx');
      out.push(`| ${sc.title} | ${ratio(g?.rps, d?.rps)} | ${ratio(g?.rps, n?.rps)} | ${ratio(g?.cpu, n?.cpu)} | ${ratio(g?.p99, n?.p99)} |`);
    }
  }
  if (notes.length) out.push('', ...notes.map((n) => `- ${n}`));
  return out.join('\n') + '\n';
}

function grpcVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'node_modules', '@grpc', 'grpc-js', 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? '?';
  } catch {
    return '?';
  }
}

function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'no commit';
  }
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const s = readSettings();
  const notes: string[] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-bench-'));
  let ok = false;

  const interrupt = (sig: NodeJS.Signals): void => {
    process.stderr.write(`\n${sig}: stopping children\n`);
    current?.stop();
    void stopAll().finally(() => {
      if (!s.keepTmp) fs.rmSync(tmp, { recursive: true, force: true });
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);

  try {
    const cert = s.scenarios.some((sc) => sc.kind === 'https') ? makeCert(tmp) : undefined;
    const up = await startUpstream(cert);
    const targets: Target[] = [];
    let nginxVersion: string | undefined;
    for (const name of s.targets) {
      if (name === 'direct') targets.push({ name, port: up.port, grpcPort: up.grpcPort, ...(up.tlsPort !== undefined ? { tlsPort: up.tlsPort } : {}) });
      else if (name === 'gateway') targets.push(await startGateway(s, tmp, up, cert));
      else {
        const n = await startNginx(tmp, up, cert, notes);
        if (n) {
          targets.push(n.target);
          nginxVersion = n.version;
        }
      }
    }
    for (const t of targets) for (const sc of s.scenarios) await sanityCheck(t, sc, notes);

    const cpuModel = os.cpus()[0]?.model.trim() ?? 'unknown CPU';
    const header = [
      `# Gatehouse bench, ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}`,
      '',
      `commit ${gitCommit()} · node ${process.version} · ${os.cpus().length} × ${cpuModel} · ` +
        `${s.rounds} round(s) × ${s.duration} s, warm-up ${s.warmup} s, ${s.connections} connections · autocannon 9 in the bench process` +
        (s.scenarios.some((sc) => sc.kind === 'grpc') ? ` (gRPC: a grpc-js ${grpcVersion()} loop)` : ''),
      `targets: ${targets.map((t) => (t.name === 'nginx' ? `nginx (${nginxVersion}, 1 process, upstream keepalive 64)` : t.name)).join(', ')}` +
        (s.gatewayArgs.length || s.gatewayNodeArgs.length ? ` · gateway flags: ${[...s.gatewayNodeArgs, ...s.gatewayArgs].join(' ')}` : ''),
    ];
    process.stdout.write(header.join('\n') + '\n\n');

    const rows: Row[] = [];
    for (const sc of s.scenarios) {
      for (const t of targets) {
        if (s.warmup > 0) await load(s, t, sc, s.warmup);
        rows.push({ scenario: sc, target: t.name, samples: [] });
      }
      for (let round = 1; round <= s.rounds; round++) {
        for (const t of targets) {
          const sample = await load(s, t, sc, s.duration);
          const row = rows.find((r) => r.scenario === sc && r.target === t.name) as Row;
          row.samples.push(sample);
          process.stdout.write(
            `${sc.title.padEnd(12)} round ${round}/${s.rounds} ${t.name.padEnd(8)} ${fmt(sample.rps).padStart(8)} req/s  p50 ${fmt(sample.p50, 2)} ms  p99 ${fmt(sample.p99, 2)} ms` +
              (sample.cpuUsPerReq !== undefined ? `  ${fmt(sample.cpuUsPerReq, 1)} µs/req` : '') +
              (sample.non2xx || sample.errors ? `  non-2xx ${sample.non2xx} errors ${sample.errors}` : '') +
              (sample.errorDetail ? ` (${sample.errorDetail})` : '') +
              '\n',
          );
          if (sample.errorDetail) notes.push(`${sc.id} round ${round} ${t.name}: ${sample.errorDetail}.`);
          await sleep(200);
        }
      }
      for (const t of targets) {
        const row = rows.find((r) => r.scenario === sc && r.target === t.name) as Row;
        if (t.child) row.peakRss = peakRssMiB(t.child.pid);
      }
    }

    if (s.scenarios.some((sc) => sc.method === 'POST' && (sc.kind ?? 'http') === 'http')) {
      const st = await upstreamStats(up.child);
      if (st && (st.badPosts > 0 || st.postBytes !== st.postCount * POST_SIZE)) {
        notes.push(`upstream: ${st.badPosts} of ${st.postCount} POST bodies had the wrong length (${st.postBytes} B in all).`);
      } else if (st) {
        notes.push(`upstream: all ${st.postCount} POST bodies arrived whole (${POST_SIZE} B each).`);
      }
    }

    const md = report(s, rows, header, notes);
    process.stdout.write('\n' + md.split('\n').slice(header.length + 1).join('\n'));
    const resultsDir = path.join(REPO, 'bench', 'results');
    fs.mkdirSync(resultsDir, { recursive: true });
    fs.writeFileSync(path.join(resultsDir, 'latest.md'), md);
    // Machine-readable medians, read by bench/check.ts (npm run bench:check).
    const json = summarize(rows).map((x) => ({ scenario: x.row.scenario.id, target: x.row.target, rps: x.rps, p50: x.p50, p99: x.p99, cpuUsPerReq: x.cpu ?? null, non2xx: x.non2xx, errors: x.errors }));
    fs.writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify({ date: new Date().toISOString(), commit: gitCommit(), rounds: s.rounds, duration: s.duration, rows: json }, null, 2));
    process.stdout.write(`\nwritten to ${path.relative(process.cwd(), path.join(resultsDir, 'latest.md')) || 'bench/results/latest.md'}\n`);
    ok = true;
  } finally {
    await stopAll();
    if (ok && !s.keepTmp) fs.rmSync(tmp, { recursive: true, force: true });
    else process.stderr.write(`temp dir kept (configs, logs): ${tmp}\n`);
  }
}

if (process.argv.includes('--upstream')) {
  runUpstream();
} else {
  main().catch((err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
