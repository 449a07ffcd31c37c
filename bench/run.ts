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
import WebSocket from 'ws';

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
// routes1k: this many extra VirtualServices (hosts vs-<i>.bench.local, 2 header-matched routes
// each); the request goes to the last one's second route.
const ROUTES_COUNT = 1000;
const ROUTES_SWAP_COUNT = 10_000; // the config-swap extra measurement's big config
const ROUTES_HEADER = 'x-bench-variant';
const routesHost = (i: number): string => `vs-${i}.bench.local`;
const WS_MESSAGE = Buffer.alloc(100, 'w'); // ws: each connection sends this and waits for its echo
const IDLE_CONNECTIONS = 10_000; // extra (a): idle keep-alive connections held open
const IDLE_BATCH = 500;

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
  /** http (default): autocannon over HTTP/1.1; https: the same over TLS; grpc: the grpc-js loop; ws: a `ws` echo loop. */
  kind?: 'http' | 'https' | 'grpc' | 'ws';
  method: 'GET' | 'POST';
  path: string;
  body?: Buffer;
  headers?: Record<string, string>;
  host?: string; // Host header (default bench.local)
  expectBytes: number; // response body length that the sanity check expects
  /** The gateway's port of the strict HTTP/1.1 engine (node:http) instead of its uWS port; other targets as usual. */
  strict?: boolean;
}
const SCENARIOS: Scenario[] = [
  { id: 'get', title: 'GET 100 B', method: 'GET', path: '/', expectBytes: SMALL_BODY.length },
  { id: 'get16k', title: 'GET 16 KiB', method: 'GET', path: '/16k', expectBytes: BIG_BODY.length },
  { id: 'post64k', title: 'POST 64 KiB', method: 'POST', path: '/upload', body: Buffer.alloc(POST_SIZE, 'p'), expectBytes: 3 },
  // The same two through the gateway's strict HTTP/1.1 engine (a second HTTP port whose Gateway is
  // annotated gatehouse.io/http1-engine: strict): what strict RFC 9112 parsing costs beside uWS.
  { id: 'get-strict', title: 'GET 100 B, strict engine', method: 'GET', path: '/', expectBytes: SMALL_BODY.length, strict: true },
  { id: 'post64k-strict', title: 'POST 64 KiB, strict engine', method: 'POST', path: '/upload', body: Buffer.alloc(POST_SIZE, 'p'), expectBytes: 3, strict: true },
  // The same small GET through a route carrying rewrite + request/response header edits + retries,
  // to a cluster with consistent hashing on a header (direct: the upstream answers /policy/* too).
  { id: 'policy', title: 'GET 100 B, full policy', method: 'GET', path: '/policy/item', headers: { 'x-user': 'bench-user' }, expectBytes: SMALL_BODY.length },
  // TLS terminated by the target (keep-alive: record overhead, hardly any handshakes).
  { id: 'https', title: 'GET 100 B over HTTPS', kind: 'https', method: 'GET', path: '/', expectBytes: SMALL_BODY.length },
  // Unary gRPC (100 B request, 100 B answer) from grpc-js clients; req/s = OK calls/s.
  { id: 'grpc', title: 'gRPC unary, 100 B', kind: 'grpc', method: 'POST', path: GRPC_PATH, expectBytes: SMALL_BODY.length },
  // Route lookup at scale: 1,000 extra VirtualServices (nginx: 1,000 server blocks), the last one hit.
  { id: 'routes1k', title: 'GET 100 B, 1,000 VirtualServices, last one hit', method: 'GET', path: '/', host: routesHost(ROUTES_COUNT - 1), headers: { [ROUTES_HEADER]: 'b' }, expectBytes: SMALL_BODY.length },
  // WebSocket: each connection sends 100 B and waits for the echo, in a loop; req/s = messages/s.
  { id: 'ws', title: 'WebSocket messages, 100 B echo', kind: 'ws', method: 'GET', path: '/ws', expectBytes: WS_MESSAGE.length },
];
const scHost = (sc: Scenario): string => sc.host ?? HOST;

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
  /** Data-plane threads of the gateway (`--workers`) and worker processes of nginx, alike. */
  workers: number;
  /** Load generator of the plain-HTTP scenarios: wrk (C, far cheaper per request) or autocannon. */
  client: 'wrk' | 'autocannon';
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
    workers: Math.max(1, Math.round(envNumber('BENCH_WORKERS', 1))),
    client: process.env['BENCH_CLIENT'] === 'autocannon' ? 'autocannon' : 'wrk',
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
function request(port: number, method: string, urlPath: string, body?: Buffer, host = HOST, tls = false, extra: Record<string, string> = {}): Promise<Reply> {
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

/**
 * `bin` on PATH, else `apt-get install -y <pkg>` when running as root on Debian (bounded to 5
 * minutes, noted in the report). False when it is still missing.
 */
function ensureDebianPackage(bin: string, pkg: string, notes: string[]): boolean {
  if (findOnPath(bin)) return true;
  if (process.getuid?.() !== 0 || !findOnPath('apt-get')) return false;
  process.stderr.write(`${bin} missing: apt-get install -y ${pkg}\n`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', pkg], { stdio: 'ignore', timeout: 300_000, env });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update'], { stdio: 'ignore', timeout: 300_000, env });
    r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', pkg], { stdio: 'ignore', timeout: 300_000, env });
  }
  const ok = findOnPath(bin) !== undefined;
  notes.push(ok ? `${bin}: was missing, installed from Debian (${pkg}).` : `${bin}: missing, and apt-get install ${pkg} failed.`);
  return ok;
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
  strictPort?: number; // gateway: HTTP/1.1 on the strict engine (node:http)
  tlsPort?: number; // HTTPS (only when the https scenario runs)
  grpcPort: number; // h2c gRPC
  child?: Child; // CPU/RSS are measured for targets that are our children (gateway, nginx)
  config?: { dir: string; base: string; text: string }; // gateway: its config folder, the file without/with extra routes
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
  strict: number; // HTTP on the strict HTTP/1.1 engine
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
  // HTTPS offers h2 by default (node:http2); `gatehouse.io/alpn: http/1.1` keeps the https
  // scenario on the uWS TLS path it has always measured (README: what h2 by default costs).
  return `# written by bench/run.ts
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-gateway
  namespace: bench
  annotations: { gatehouse.io/alpn: "http/1.1" }
spec:
  selector: {}
  servers:
    - port: { number: ${ports.http}, protocol: HTTP, name: http }
      hosts: ['*']${httpsServer}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-gateway-strict
  namespace: bench
  annotations: { gatehouse.io/http1-engine: strict }
spec:
  selector: {}
  servers:
    - port: { number: ${ports.strict}, protocol: HTTP, name: http-strict }
      hosts: ['*']
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
  gateways: [bench-gateway, bench-gateway-strict]
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

/**
 * `n` extra VirtualServices bound to bench-gateway: host vs-<i>.bench.local, two routes each that
 * match on the x-bench-variant header (a, b), both to the upstream.
 */
function routesYaml(n: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    out.push(`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs-${i}
  namespace: bench
spec:
  hosts: ['${routesHost(i)}']
  gateways: [bench-gateway]
  http:
    - name: a
      match: [{ headers: { ${ROUTES_HEADER}: { exact: a } } }]
      route: [{ destination: { host: upstream.bench.svc.cluster.local, port: { number: 80 } } }]
    - name: b
      match: [{ headers: { ${ROUTES_HEADER}: { exact: b } } }]
      route: [{ destination: { host: upstream.bench.svc.cluster.local, port: { number: 80 } } }]
`);
  }
  return out.join('');
}

/** Replaces the gateway's config file in one rename (the watcher ignores dot files). */
function writeGatewayConfig(configDir: string, text: string): void {
  const tmpFile = path.join(configDir, '.bench.yaml.tmp');
  fs.writeFileSync(tmpFile, text);
  fs.renameSync(tmpFile, path.join(configDir, 'bench.yaml'));
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

async function startGateway(s: Settings, tmp: string, up: Upstream, cert: CertPaths | undefined, name = 'gateway', extraRoutes?: number): Promise<Target> {
  if (!fs.existsSync(s.gatewayCli)) {
    throw new Error(`${path.relative(REPO, s.gatewayCli)} not found: run \`npm run build\` (npm run bench does), or drop gateway from BENCH_TARGETS`);
  }
  const [port, adminPort, tlsPort, grpcPort, strictPort] = (await freePorts(5)) as [number, number, number, number, number];
  const ports: GatewayPorts = { http: port, strict: strictPort, grpc: grpcPort, ...(cert ? { https: tlsPort } : {}) };
  const configDir = path.join(tmp, `${name}-config`);
  fs.mkdirSync(configDir);
  const base = gatewayConfig(ports, up, cert);
  const configText = base + routesYaml(extraRoutes ?? (s.scenarios.some((sc) => sc.id === 'routes1k') ? ROUTES_COUNT : 0));
  fs.writeFileSync(path.join(configDir, 'bench.yaml'), configText);
  const logFile = path.join(tmp, `${name}.log`);
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
    '--workers', String(s.workers),
    ...s.gatewayArgs,
  ];
  const proc = spawn(process.execPath, args, { cwd: REPO, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const child = track(name, proc, logFile);
  await waitReady(child, adminPort, '/healthz/ready', '127.0.0.1', s.readyTimeoutMs);
  return { name: 'gateway', port, strictPort, grpcPort, ...(ports.https !== undefined ? { tlsPort: ports.https } : {}), child, config: { dir: configDir, base, text: configText } };
}

/** nginx as a reverse proxy: one process, upstream keepalive. Undefined (with a note) if unusable. */
interface NginxOptions {
  routes: number; // extra server blocks for vs-<i>.bench.local (routes1k)
  workerConnections: number;
  name: string; // temp sub-folder and child name
  workers: number; // worker_processes (the gateway's --workers)
}

async function startNginx(
  tmp: string,
  up: Upstream,
  cert: CertPaths | undefined,
  notes: string[],
  o: NginxOptions = { routes: 0, workerConnections: 1024, name: 'nginx', workers: 1 },
): Promise<{ target: Target; version: string } | undefined> {
  const bin = findOnPath('nginx');
  if (!bin) {
    notes.push('nginx: not on PATH, skipped (the bench installs nothing).');
    return undefined;
  }
  // `nginx -v` prints its version to stderr.
  const v = spawnSync(bin, ['-v'], { encoding: 'utf8' });
  let version = `${v.stderr ?? ''}${v.stdout ?? ''}`.trim() || 'nginx';
  version = version.replace(/^nginx version:\s*/, '');

  const dir = path.join(tmp, o.name);
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
  // routes1k: one server block per VirtualService host; like the gateway's two header-matched
  // routes, a request without x-bench-variant a or b gets a 404.
  const routeServers: string[] = [];
  for (let i = 0; i < o.routes; i++) {
    routeServers.push(`
  server {
    listen 127.0.0.1:${port};
    server_name ${routesHost(i)};
    location / {
      if ($http_${ROUTES_HEADER.replace(/-/g, '_')} !~ ^[ab]$) { return 404; }${proxyToUpstream}
    }
  }`);
  }
  // One worker: no master (one process, as measured in PERFORMANCE.md); more: a master and N workers.
  const conf = `daemon off;
master_process ${o.workers > 1 ? 'on' : 'off'};
worker_processes ${o.workers};
${o.workerConnections > 1024 ? `worker_rlimit_nofile ${o.workerConnections + 100};
` : ''}pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections ${o.workerConnections}; }
http {
  server_names_hash_max_size 32768;
  server_names_hash_bucket_size 128;
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
    location /ws {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_read_timeout 300s;
    }
    location / {${proxyToUpstream}
    }
  }${routeServers.join('')}${tlsServer}
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
  const child = track(o.name, proc, logFile);
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
  return sc.strict ? (target.strictPort ?? target.port) : target.port;
}

/**
 * Ends a measurement: the target tree's CPU per request (`count` responses) since `cpuBefore`,
 * and a clear error if the target died during the scenario.
 */
function closeSample(sample: Sample, target: Target, sc: Scenario, cpuBefore: Map<number, number> | undefined, count: number): Sample {
  const pid = target.child?.pid;
  if (pid !== undefined && cpuBefore && count > 0) sample.cpuUsPerReq = (cpuDelta(cpuBefore, cpuSnapshot(pid)) * 1e6) / count;
  if (target.child && !alive(target.child)) throw new Error(`${target.child.name} died during ${sc.title}\n${tail(target.child.logFile)}`);
  return sample;
}

async function load(s: Settings, target: Target, sc: Scenario, seconds: number): Promise<Sample> {
  if (sc.kind === 'grpc') return loadGrpc(s, target, sc, seconds);
  if (sc.kind === 'ws') return loadWs(s, target, sc, seconds);
  // wrk cannot set the TLS server name apart from the URL's host: HTTPS stays on autocannon.
  if (s.client === 'wrk' && sc.kind !== 'https') return loadWrk(s, target, sc, seconds);
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
    headers: { host: scHost(sc), ...(sc.body ? { 'content-type': 'application/octet-stream' } : {}), ...(sc.headers ?? {}) },
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
  return closeSample(sample, target, sc, cpuBefore, reqs);
}

/**
 * Plain-HTTP load with wrk (one thread, `s.connections` connections, keep-alive): about a third of
 * autocannon's CPU per request, so the client takes less of the 2 cores the targets need. Latency
 * percentiles are wrk's (all responses; it prints p50 and p99 with --latency); client CPU is read
 * from /proc while it runs.
 */
async function loadWrk(s: Settings, target: Target, sc: Scenario, seconds: number): Promise<Sample> {
  const bin = findOnPath('wrk');
  if (!bin) throw new Error('wrk: not on PATH (BENCH_CLIENT=autocannon uses autocannon instead)');
  const pid = target.child?.pid;
  const cpuBefore = pid !== undefined ? cpuSnapshot(pid) : undefined;
  const args = ['-t1', `-c${s.connections}`, `-d${seconds}s`, '--timeout', '10s', '--latency', '-H', `Host: ${scHost(sc)}`];
  for (const [k, v] of Object.entries(sc.headers ?? {})) args.push('-H', `${k}: ${v}`);
  if (sc.body) {
    // The body as a Lua long string of one repeated byte (the bench's bodies are).
    const byte = String.fromCharCode(sc.body[0] ?? 0x70);
    const script = path.join(os.tmpdir(), `gatehouse-bench-wrk-${process.pid}-${sc.id}.lua`);
    fs.writeFileSync(script, `wrk.method = "${sc.method}"\nwrk.headers["Content-Type"] = "application/octet-stream"\nwrk.body = string.rep("${byte}", ${sc.body.length})\n`);
    args.push('-s', script);
  }
  args.push(`http://127.0.0.1:${portFor(target, sc)}${sc.path}`);
  const t0 = process.hrtime.bigint();
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  current = { stop: () => child.kill('SIGINT') };
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  // wrk's own CPU seconds, read until it exits (its /proc entry goes with it).
  let clientSec = 0;
  const poll = setInterval(() => {
    const st = child.pid !== undefined ? readStat(child.pid) : undefined;
    if (st) clientSec = st.ticks / CLK_TCK;
  }, 100);
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  clearInterval(poll);
  current = undefined;
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  if (code !== 0) throw new Error(`wrk exited ${code}: ${out.trim().slice(-500)}`);
  const num = (re: RegExp): number => {
    const m = re.exec(out);
    return m ? Number(m[1]) : 0;
  };
  const ms = (re: RegExp): number => {
    const m = re.exec(out);
    if (!m) return NaN;
    const unit = m[2];
    const x = Number(m[1]);
    return unit === 'us' ? x / 1000 : unit === 's' ? x * 1000 : unit === 'm' ? x * 60_000 : x;
  };
  const reqs = num(/(\d+) requests in/);
  const duration = (() => {
    const m = /requests in ([\d.]+)(ms|s|m)/.exec(out);
    if (!m) return seconds;
    const x = Number(m[1]);
    return m[2] === 'ms' ? x / 1000 : m[2] === 'm' ? x * 60 : x;
  })();
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const sample: Sample = {
    reqs,
    rps: reqs / duration,
    p50: ms(/^\s+50%\s+([\d.]+)(us|ms|s|m)$/m),
    p99: ms(/^\s+99%\s+([\d.]+)(us|ms|s|m)$/m),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/),
    errors: sockErr ? sockErr.slice(1).reduce((a, x) => a + Number(x), 0) : 0,
    clientCpuPct: (clientSec / wall) * 100,
  };
  return closeSample(sample, target, sc, cpuBefore, reqs);
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
    return closeSample(sample, target, sc, cpuBefore, reqs);
  } finally {
    current = undefined;
    for (const c of clients) c.close();
  }
}

/** One WebSocket client connection (no compression), open. */
function wsConnect(port: number, sc: Scenario): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${sc.path}`, { headers: { host: scHost(sc) }, perMessageDeflate: false, handshakeTimeout: 5000 });
    ws.binaryType = 'nodebuffer';
    const onError = (err: Error): void => {
      ws.terminate();
      reject(err);
    };
    ws.once('error', onError);
    ws.once('unexpected-response', (_req, res) => onError(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
    ws.once('open', () => {
      ws.off('error', onError);
      resolve(ws);
    });
  });
}

/**
 * WebSocket echo load: `connections` sockets (opened before the window), each sending a 100 B
 * binary message and waiting for its echo, in a loop, for the duration. req/s = echoed messages/s,
 * latency per message, CPU of the target tree per message. errors = wrong echoes, socket errors
 * and sockets closed during the window.
 */
async function loadWs(s: Settings, target: Target, sc: Scenario, seconds: number): Promise<Sample> {
  const sockets: WebSocket[] = [];
  try {
    for (let i = 0; i < s.connections; i += 16) {
      const batch = await Promise.all(Array.from({ length: Math.min(16, s.connections - i) }, () => wsConnect(target.port, sc)));
      sockets.push(...batch);
    }
    const lat = new Latencies();
    let msgs = 0;
    let errors = 0;
    const details = new Map<string, number>();
    const problem = (key: string): void => {
      errors++;
      details.set(key, (details.get(key) ?? 0) + 1);
    };
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
    await new Promise<void>((resolve) => {
      let running = sockets.length;
      const done = (): void => {
        if (--running === 0) resolve();
      };
      for (const ws of sockets) {
        let sentAt = 0;
        let finished = false;
        const finish = (): void => {
          if (finished) return;
          finished = true;
          done();
        };
        const send = (): void => {
          if (stopped || performance.now() >= endAt) return finish();
          sentAt = performance.now();
          ws.send(WS_MESSAGE);
        };
        ws.on('message', (data: Buffer) => {
          if (data.length === sc.expectBytes) {
            msgs++;
            lat.add(performance.now() - sentAt);
          } else problem(`echo of ${data.length} B`);
          send();
        });
        ws.on('error', (err) => problem(`error: ${err.message}`));
        ws.on('close', (code) => {
          if (!finished) problem(`closed (${code})`);
          finish();
        });
        send();
      }
      // A socket that never gets its echo must not hang the bench: give up 10 s after the window.
      setTimeout(() => {
        for (const ws of sockets) ws.terminate();
      }, (seconds + 10) * 1000).unref();
    });
    current = undefined;
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const client = process.cpuUsage(clientBefore);
    const [p50 = NaN, p99 = NaN] = lat.percentiles([50, 99]);
    const sample: Sample = {
      reqs: msgs,
      rps: msgs / wall,
      p50,
      p99,
      non2xx: 0,
      errors,
      clientCpuPct: ((client.user + client.system) / 1e6 / wall) * 100,
      ...(details.size ? { errorDetail: [...details].map(([k, n]) => `${n}× ${k}`).join('; ') } : {}),
    };
    return closeSample(sample, target, sc, cpuBefore, msgs);
  } finally {
    current = undefined;
    for (const ws of sockets) {
      ws.removeAllListeners();
      ws.on('error', () => {});
      ws.close();
      setTimeout(() => ws.terminate(), 2000).unref();
    }
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
  if (sc.kind === 'ws') {
    try {
      const ws = await wsConnect(target.port, sc);
      const echo = await new Promise<Buffer>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no echo after 5 s')), 5000);
        ws.once('message', (data: Buffer) => {
          clearTimeout(t);
          resolve(data);
        });
        ws.send(WS_MESSAGE);
      });
      ws.terminate();
      if (echo.length !== sc.expectBytes) throw new Error(`echo of ${echo.length} B`);
    } catch (err) {
      throw new Error(
        `${target.name}: WebSocket ${sc.path} (Host: ${HOST}) on 127.0.0.1:${target.port} failed, expected a ${sc.expectBytes} B echo: ${(err as Error).message}` +
          (target.child?.logFile ? `\n${tail(target.child.logFile)}` : ''),
      );
    }
    return;
  }
  const r = await request(portFor(target, sc), sc.method, sc.path, sc.body, scHost(sc), sc.kind === 'https', sc.headers);
  if (r.tls) notes.push(`${sc.id}: ${target.name} negotiated ${r.tls} (SNI ${HOST}).`);
  if (r.status !== 200 || r.body.length !== sc.expectBytes) {
    const detail = r.body.subarray(0, 200).toString('utf8').replace(/\s+/g, ' ');
    throw new Error(
      `${target.name}: ${sc.method} ${sc.path} (Host: ${scHost(sc)}) answered ${r.status} with ${r.body.length} B, expected 200 with ${sc.expectBytes} B: ${detail}` +
        (target.child?.logFile ? `\n${tail(target.child.logFile)}` : ''),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Extra measurements (run once after the scenarios unless BENCH_EXTRA=0)

/** Resident set (VmRSS) of the tree, in MiB. */
function rssMiB(root: number): number {
  let kb = 0;
  for (const pid of processTree(root)) {
    try {
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m?.[1]) kb += Number(m[1]);
    } catch {
      /* exited */
    }
  }
  return kb / 1024;
}

/** Soft and hard "Max open files" of a process. */
function nofile(pid: number | 'self'): { soft: number; hard: number } {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'));
  const n = (x: string | undefined): number => (x === undefined || x === 'unlimited' ? Infinity : Number(x));
  return { soft: n(m?.[1]), hard: n(m?.[2]) };
}

/** Raises a process's soft open-files limit to `want` (at most its hard limit) with prlimit(1). */
function raiseNofile(pid: number, want: number): string {
  const { soft, hard } = nofile(pid);
  if (soft >= want) return `${soft}`;
  const to = Math.min(want, hard);
  try {
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=${to}:${Number.isFinite(hard) ? hard : to}`], { stdio: 'ignore' });
  } catch {
    /* not allowed: keep the soft limit */
  }
  const after = nofile(pid).soft;
  return after === soft ? `${soft} (could not raise it)` : `${soft} → ${after}`;
}

/**
 * Opens `count` keep-alive connections (batches of IDLE_BATCH), each sending one GET / and
 * reading its whole answer, then keeping the socket. Returns the sockets whose request got a 200.
 */
async function openIdle(port: number, count: number): Promise<{ sockets: net.Socket[]; failed: number; ms: number }> {
  const sockets: net.Socket[] = [];
  let failed = 0;
  const t0 = performance.now();
  const one = (): Promise<net.Socket | undefined> =>
    new Promise((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      let buf = Buffer.alloc(0);
      const fail = (): void => {
        sock.destroy();
        resolve(undefined);
      };
      sock.setTimeout(10_000, fail);
      sock.once('error', fail);
      sock.once('connect', () => sock.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`));
      const onData = (chunk: Buffer): void => {
        buf = Buffer.concat([buf, chunk]);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? '0');
        if (buf.length < end + 4 + len) return;
        sock.off('data', onData);
        sock.setTimeout(0);
        sock.removeAllListeners('error');
        sock.on('error', () => {}); // a reset while idle is counted by the caller (destroyed)
        if (!head.startsWith('HTTP/1.1 200')) return fail();
        resolve(sock);
      };
      sock.on('data', onData);
    });
  for (let i = 0; i < count; i += IDLE_BATCH) {
    const batch = await Promise.all(Array.from({ length: Math.min(IDLE_BATCH, count - i) }, one));
    for (const x of batch) {
      if (x) sockets.push(x);
      else failed++;
    }
  }
  return { sockets, failed, ms: performance.now() - t0 };
}

async function closeIdle(sockets: net.Socket[]): Promise<void> {
  for (const x of sockets) x.destroy();
  await sleep(500);
}

async function idleConnections(s: Settings, t: Target, lines: string[]): Promise<void> {
  const pid = t.child?.pid;
  if (pid === undefined) return;
  // Each idle connection holds one fd here and one in the target (the gateway: plus none upstream).
  const own = raiseNofile(process.pid, IDLE_CONNECTIONS + 1000);
  const theirs = raiseNofile(pid, IDLE_CONNECTIONS + 1000);
  const cap = Math.min(nofile('self').soft, nofile(pid).soft) - 1000;
  const count = Math.max(0, Math.min(IDLE_CONNECTIONS, cap));
  if (count < IDLE_CONNECTIONS) lines.push(`- ${t.name}: open-files limit (bench ${own}, ${t.name} ${theirs}) caps the idle connections at ${count}.`);
  await sleep(1000);
  const before = rssMiB(pid);
  const { sockets, failed, ms } = await openIdle(t.port, count);
  await sleep(1000);
  const open = sockets.filter((x) => !x.destroyed && x.readyState === 'open').length;
  const during = rssMiB(pid);
  await closeIdle(sockets);
  await sleep(1000);
  const after = rssMiB(pid);
  const per = open > 0 ? ((during - before) * 1024 * 1024) / open : NaN;
  if (t.name === 'gateway') {
    if (t.child?.name === 'gateway') figures.idleLoaded = { rss: during, open };
    else figures.idle = { rss: during, open };
  }
  lines.push(
    `| ${t.name === 'gateway' ? (t.child?.name === 'gateway' ? 'gateway, after the scenarios' : 'gateway, fresh') : t.name} | ${fmt(count)} | ${fmt(ms / 1000, 1)} | ${failed} | ${fmt(open)} | ${fmt(before, 1)} | ${fmt(during, 1)} | ${fmt(after, 1)} | ${fmt(per / 1024, 1)} |`,
  );
  if (t.child && !alive(t.child)) throw new Error(`${t.child.name} died holding idle connections\n${tail(t.child.logFile)}`);
}

interface LogEvent {
  msg: string;
  ms?: number;
  at: number; // performance.now() when the bench saw it
}

/** Waits for the gateway to log "configuration applied" (with ms) after byte `offset` of its log. */
async function waitApplied(logFile: string, offset: number, timeoutMs: number): Promise<{ event: LogEvent; offset: number }> {
  const deadline = performance.now() + timeoutMs;
  let pos = offset;
  let rest = '';
  while (performance.now() < deadline) {
    const fd = fs.openSync(logFile, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      if (size > pos) {
        const b = Buffer.alloc(size - pos);
        fs.readSync(fd, b, 0, b.length, pos);
        pos = size;
        const text = rest + b.toString('utf8');
        const parts = text.split('\n');
        rest = parts.pop() ?? '';
        for (const line of parts) {
          let o: { msg?: string; ms?: number };
          try {
            o = JSON.parse(line) as { msg?: string; ms?: number };
          } catch {
            continue;
          }
          if (o.msg === 'configuration applied' && typeof o.ms === 'number') return { event: { msg: o.msg, ms: o.ms, at: performance.now() }, offset: pos };
          if (o.msg && /rejected|could not be resolved/.test(o.msg)) throw new Error(`gateway: ${o.msg}: ${line.slice(0, 300)}`);
        }
      }
    } finally {
      fs.closeSync(fd);
    }
    await sleep(20);
  }
  throw new Error(`gateway: no "configuration applied" within ${timeoutMs / 1000} s`);
}

/**
 * Config swap under load: autocannon GETs / (Host bench.local) at the gateway; after 2 s the
 * config file becomes the 10,000-VirtualService one, once applied (+1.5 s) it goes back, and the
 * load stops 2 s after that (at least 8 s in all). Per-response completion times split the
 * latencies into "swap windows" (from the write until 1 s after the gateway logged "configuration
 * applied") and the rest.
 */
async function configSwap(s: Settings, t: Target, lines: string[]): Promise<void> {
  const cfg = t.config;
  const logFile = t.child?.logFile;
  if (!cfg || !logFile || !t.child) return;
  const big = cfg.base + routesYaml(ROUTES_SWAP_COUNT);
  const times: number[] = [];
  const lats: number[] = [];
  let bad = 0;
  const start = performance.now();
  const inst = runAutocannon({
    url: `http://127.0.0.1:${t.port}/`,
    connections: s.connections,
    duration: 180,
    method: 'GET',
    headers: { host: HOST },
    timeout: 10,
  });
  current = inst;
  inst.on('response', (_c, status, _b, ms) => {
    if (status >= 200 && status < 300) {
      times.push(performance.now());
      lats.push(ms);
    } else bad++;
  });
  const windows: { from: number; to: number; ms: number; what: string }[] = [];
  let error: Error | undefined;
  try {
    let offset = fs.statSync(logFile).size;
    await sleep(2000);
    for (const [what, text] of [[`→ ${fmt(ROUTES_SWAP_COUNT)} VirtualServices`, big], ['→ back', cfg.text]] as const) {
      const from = performance.now();
      writeGatewayConfig(cfg.dir, text);
      const r = await waitApplied(logFile, offset, 120_000);
      offset = r.offset;
      windows.push({ from, to: r.event.at + 1000, ms: r.event.ms ?? NaN, what });
      await sleep(1500);
    }
    await sleep(Math.max(2000, start + 8000 - performance.now()));
  } catch (err) {
    error = err as Error;
    writeGatewayConfig(cfg.dir, cfg.text);
  } finally {
    inst.stop();
  }
  const r = await inst;
  current = undefined;
  const end = performance.now();
  const inWin = (x: number): boolean => windows.some((w) => x >= w.from && x <= w.to);
  const inside = new Latencies();
  const outside = new Latencies();
  let nIn = 0;
  let nOut = 0;
  let maxIn = 0;
  for (let i = 0; i < times.length; i++) {
    const x = times[i] as number;
    const l = lats[i] as number;
    if (inWin(x)) {
      inside.add(l);
      nIn++;
      maxIn = Math.max(maxIn, l);
    } else {
      outside.add(l);
      nOut++;
    }
  }
  const winSec = windows.reduce((a, w) => a + (Math.min(w.to, end) - w.from) / 1000, 0);
  const outSec = (end - start) / 1000 - winSec;
  // p99 per 1-s bin inside the windows: the worst second.
  let worstBin = 0;
  for (const w of windows) {
    for (let b = w.from; b < w.to; b += 1000) {
      const bin = new Latencies();
      for (let i = 0; i < times.length; i++) if ((times[i] as number) >= b && (times[i] as number) < b + 1000) bin.add(lats[i] as number);
      const [p = NaN] = bin.percentiles([99]);
      if (p > worstBin) worstBin = p;
    }
  }
  // The longest time without any response completing (a stalled event loop shows up here).
  let gap = 0;
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, (times[i] as number) - (times[i - 1] as number));
  const [pIn = NaN] = inside.percentiles([99]);
  const [pOut = NaN] = outside.percentiles([99]);
  if (!error) figures.swap = { gapMs: gap, p99Ratio: pOut > 0 ? pIn / pOut : NaN };
  for (const w of windows) {
    lines.push(`| ${w.what} | ${fmt(w.ms)} | ${fmt((w.to - 1000 - w.from) / 1000, 2)} |`);
  }
  lines.push(
    '',
    `Under ${s.connections} connections of GET 100 B for ${fmt((end - start) / 1000, 1)} s: outside the swap windows ${fmt(nOut / outSec)} req/s, p99 ${fmt(pOut, 2)} ms; ` +
      `inside them (${fmt(winSec, 1)} s: from each write until 1 s after "configuration applied") ${fmt(winSec > 0 ? nIn / winSec : NaN)} req/s, p99 ${fmt(pIn, 2)} ms ` +
      `(${ratio(pIn, pOut)} the outside p99; worst 1-s bin p99 ${fmt(worstBin, 2)} ms, max ${fmt(maxIn, 2)} ms); longest time without any response ${fmt(gap)} ms; non-2xx ${bad}, errors ${r.errors} of which timeouts (no answer in 10 s, not in the latencies) ${r.timeouts}.`,
  );
  if (error) lines.push(`- swap failed: ${error.message.split('\n')[0]}`);
  if (!alive(t.child)) throw new Error(`gateway died during the config swap\n${tail(logFile)}`);
}

async function extras(s: Settings, targets: Target[], up: Upstream, cert: CertPaths | undefined, tmp: string, notes: string[]): Promise<string> {
  const lines: string[] = ['## Extra measurements', '', '### Idle keep-alive connections', ''];
  lines.push(
    '| target | connections | open s | failed | still open at measurement | RSS MiB before | RSS MiB with them | RSS MiB after close | KiB per connection |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  );
  const gw = targets.find((t) => t.name === 'gateway');
  if (gw) {
    await idleConnections(s, gw, lines);
    // A second gateway, started now with the base config (no routes1k extras, like nginx-idle):
    // what 10,000 idle connections cost without the heap the scenarios grew (V8 keeps it; gRPC
    // alone takes the RSS to ~300 MiB) or the 1,000 extra VirtualServices (~40 MiB).
    const fresh = await startGateway(s, tmp, up, cert, 'gateway-idle', 0);
    try {
      await idleConnections(s, fresh, lines);
    } finally {
      if (fresh.child) await stopChild(fresh.child);
    }
  }
  if (targets.some((t) => t.name === 'nginx')) {
    // A separate nginx (same config, worker_connections sized for the idle connections) so the
    // scenario nginx keeps its usual 1,024: its "before" includes the bigger connection table.
    const n = await startNginx(tmp, up, cert, notes, { routes: 0, workerConnections: IDLE_CONNECTIONS + 1024, name: 'nginx-idle', workers: s.workers });
    if (n?.target.child) {
      try {
        await idleConnections(s, n.target, lines);
      } finally {
        await stopChild(n.target.child);
      }
    }
  }
  lines.push(
    '',
    `Each connection sent one \`GET /\` (Host ${HOST}) and kept its socket; opened in batches of ${IDLE_BATCH}, measured 1 s after the last. RSS = VmRSS of the process tree. ` +
      `nginx here is a second instance with worker_connections ${fmt(IDLE_CONNECTIONS + 1024)} (its "before" includes that connection table).`,
  );
  if (gw) {
    lines.push('', '### Config swap under load', '', '| swap | gateway "configuration applied" ms | write → applied seen, s |', '|---|---:|---:|');
    await configSwap(s, gw, lines);
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// Report

/** What the extra measurements found, for the targets table. */
const figures: { idle?: { rss: number; open: number }; idleLoaded?: { rss: number; open: number }; swap?: { gapMs: number; p99Ratio: number } } = {};

/**
 * The hot-path issue's targets against this run (one worker, same run as nginx). A target that
 * this run did not measure says so. Never asserted anywhere: a table to read.
 */
function targetsTable(s: Settings, sum: ReturnType<typeof summarize>): string[] {
  const by = (id: string, t: TargetName) => sum.find((x) => x.row.scenario.id === id && x.row.target === t);
  const rows: string[] = [];
  const verdict = (ok: boolean | undefined, floorOk?: boolean): string => (ok === undefined ? 'not measured' : ok ? 'met' : floorOk ? 'missed (above the floor)' : 'missed');
  const g = by('get', 'gateway');
  const n = by('get', 'nginx');
  if (g && n) {
    const r = g.rps / n.rps;
    const cpu = g.cpu;
    rows.push(`| small GET req/s vs nginx | ≥ 0.6× (floor 0.45×) | ${r.toFixed(2)}× | ${verdict(r >= 0.6, r >= 0.45)} |`);
    rows.push(`| small GET CPU per request | ≤ 25 µs (floor 35 µs) | ${fmt(cpu, 1)} µs (nginx ${fmt(n.cpu, 1)} µs) | ${verdict(cpu === undefined ? undefined : cpu <= 25, cpu !== undefined && cpu <= 35)} |`);
    rows.push(`| small GET p99 vs nginx | ≤ 2× | ${(g.p99 / n.p99).toFixed(2)}× | ${verdict(g.p99 / n.p99 <= 2)} |`);
  } else rows.push('| small GET vs nginx | ≥ 0.6×, ≤ 25 µs, p99 ≤ 2× | – | not measured (needs get with gateway and nginx) |');
  for (const [id, title] of [['get16k', '16 KiB GET'], ['post64k', '64 KiB POST']] as const) {
    const a = by(id, 'gateway');
    const b = by(id, 'nginx');
    if (a && b) rows.push(`| ${title} req/s vs nginx | ≥ 0.5× | ${(a.rps / b.rps).toFixed(2)}× | ${verdict(a.rps / b.rps >= 0.5)} |`);
    else rows.push(`| ${title} req/s vs nginx | ≥ 0.5× | – | not measured |`);
  }
  const idle = figures.idle;
  const loaded = figures.idleLoaded ? `; the gateway that ran the scenarios: ${fmt(figures.idleLoaded.rss * 1.048576, 0)} MB` : '';
  rows.push(idle ? `| RSS with ${fmt(idle.open)} idle keep-alive connections (fresh gateway) | ≤ 150 MB | ${fmt(idle.rss * 1.048576, 0)} MB (${fmt(idle.rss, 0)} MiB)${loaded} | ${verdict(idle.rss * 1.048576 <= 150)} |` : '| RSS with 10,000 idle keep-alive connections | ≤ 150 MB | – | not measured (BENCH_EXTRA=0) |');
  const sw = figures.swap;
  rows.push(sw ? `| 10,000-route config swap: longest time without a response | < 200 ms | ${fmt(sw.gapMs)} ms | ${verdict(sw.gapMs < 200)} |` : '| 10,000-route config swap stall | < 200 ms | – | not measured (BENCH_EXTRA=0) |');
  rows.push(sw ? `| 10,000-route config swap: p99 inside vs outside the swap | ≤ 2× | ${sw.p99Ratio.toFixed(2)}× | ${verdict(sw.p99Ratio <= 2)} |` : '| config swap p99 | ≤ 2× | – | not measured |');
  rows.push(`| CPU per request, 2 workers vs 1 | unchanged | – | compare \`BENCH_WORKERS=2\` with this run${os.cpus().length <= 2 ? ' (this box has 2 cores: it cannot show scaling)' : ''} |`);
  return ['', `### Targets (workers: ${s.workers})`, '', '| target | wanted | this run | verdict |', '|---|---|---|---|', ...rows];
}

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
      'Client CPU % = the load generator: the wrk process, or this process for autocannon / the grpc-js loop / the ws loop (100 = one core): near 100 means the client, not the target, is the limit.' +
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

function targetsReport(s: Settings, rows: Row[]): string {
  return targetsTable(s, summarize(rows)).join('\n') + '\n';
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
    if (s.targets.includes('nginx')) ensureDebianPackage('nginx', 'nginx', notes);
    if (s.client === 'wrk' && s.scenarios.some((sc) => (sc.kind ?? 'http') === 'http') && !ensureDebianPackage('wrk', 'wrk', notes)) {
      notes.push('wrk: missing and not installable here; the HTTP scenarios ran on autocannon.');
      s.client = 'autocannon';
    }
    const cert = s.scenarios.some((sc) => sc.kind === 'https') ? makeCert(tmp) : undefined;
    const up = await startUpstream(cert);
    const targets: Target[] = [];
    let nginxVersion: string | undefined;
    for (const name of s.targets) {
      if (name === 'direct') targets.push({ name, port: up.port, grpcPort: up.grpcPort, ...(up.tlsPort !== undefined ? { tlsPort: up.tlsPort } : {}) });
      else if (name === 'gateway') targets.push(await startGateway(s, tmp, up, cert));
      else {
        const n = await startNginx(tmp, up, cert, notes, { routes: s.scenarios.some((sc) => sc.id === 'routes1k') ? ROUTES_COUNT : 0, workerConnections: 1024, name: 'nginx', workers: s.workers });
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
        `${s.rounds} round(s) × ${s.duration} s, warm-up ${s.warmup} s, ${s.connections} connections · ${s.client === 'wrk' ? 'wrk 4 (1 thread) for plain HTTP, autocannon 9 in the bench process for HTTPS' : 'autocannon 9 in the bench process'}` +
        (s.scenarios.some((sc) => sc.kind === 'grpc') ? ` (gRPC: a grpc-js ${grpcVersion()} loop)` : ''),
      `workers: ${s.workers} (gateway --workers ${s.workers}, nginx worker_processes ${s.workers}; BENCH_WORKERS)` +
        (os.cpus().length <= s.workers ? ` · ${os.cpus().length} cores: the client, upstream and proxy share them, so this box cannot show scaling` : ''),
      `targets: ${targets.map((t) => (t.name === 'nginx' ? `nginx (${nginxVersion}, ${s.workers === 1 ? '1 process' : `${s.workers} worker processes`}, upstream keepalive 64)` : t.name)).join(', ')}` +
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

    const extra = process.env['BENCH_EXTRA'] !== '0' ? await extras(s, targets, up, cert, tmp, notes) : '';
    const md = report(s, rows, header, notes) + (extra ? '\n' + extra : '') + (s.targets.includes('gateway') ? targetsReport(s, rows) : '');
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
