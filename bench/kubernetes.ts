// `npm run bench:kube`: what `--kubernetes` costs and how fast it follows the API, against the test
// API server (test/helpers/kube-apiserver.ts):
// 1. time to first ready and memory (VmRSS / VmHWM of the whole process) with 1,000 VirtualServices,
//    1,000 Services, 1,000 EndpointSlices holding 5,000 endpoints and their 5,000 Pods in the API,
//    beside the same Istio configuration read from files (no --kubernetes) for comparison;
// 2. API event → traffic, with 3 objects and with all of the above: a VirtualService changed N times (BENCH_KUBE_CHANGES, default 100), a
//    response header flipping between two values, each time from the moment the API server emits
//    the event to the first response carrying the new value (requests sent back to back on a
//    keep-alive connection); p50/p99;
// 3. with all of the above, an EndpointSlice changed N times (the endpoint of Service `flip` moving
//    between two upstreams), from the event to the first response from the new upstream.
// The VirtualServices route to the Services (vs-<i> to svc-<i>, besides vs-0 to a ServiceEntry).
// BENCH_KUBE_ONLY=registry runs only the part with the Services (no files, no small configuration).
import { readFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { startGateway, type GatewayProcess } from '../test/helpers/gateway.js';
import { KubeApiServer, type KObj } from '../test/helpers/kube-apiserver.js';
import { freePorts, http } from '../test/helpers/net.js';
import { startEcho } from '../test/helpers/upstream.js';
import { yamlDocs } from '../test/helpers/yaml.js';

const CHANGES = Number(process.env.BENCH_KUBE_CHANGES ?? 100);
const VS = 1000;
const SERVICES = 1000;
const ENDPOINTS_PER_SLICE = 5;
/** BENCH_KUBE_NODE_ARGS: Node.js options of the gateway under test (`--cpu-prof --cpu-prof-dir=/tmp/prof`), space-separated. */
const nodeArgs = (process.env.BENCH_KUBE_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');

function memory(pid: number): { rssMB: number; hwmMB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { rssMB: Math.round(kb('VmRSS') / 1024), hwmMB: Math.round(kb('VmHWM') / 1024) };
}

function istio(port: number, upstreamPort: number): KObj[] {
  const docs: KObj[] = [
    { apiVersion: 'networking.istio.io/v1', kind: 'Gateway', metadata: { name: 'gw', namespace: 'default' }, spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: port, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] } },
    { apiVersion: 'networking.istio.io/v1', kind: 'ServiceEntry', metadata: { name: 'backend', namespace: 'default' }, spec: { hosts: ['backend.bench'], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], endpoints: [{ address: '127.0.0.1', ports: { http: upstreamPort }, labels: { version: 'a' } }] } },
  ];
  for (let i = 0; i < VS; i++) {
    const svc = i === 0 ? 'backend.bench' : `svc-${i}.team-${i % 20}.svc.cluster.local`;
    docs.push({ apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: `vs-${i}`, namespace: 'default' }, spec: { hosts: [`vs-${i}.bench`], gateways: ['gw'], http: [{ match: [{ headers: { 'x-variant': { exact: 'a' } } }], route: [{ destination: { host: 'backend.bench', port: { number: 80 } } }] }, { route: [{ destination: { host: svc, port: { number: 80 } } }] }] } });
  }
  return docs;
}

/** Service `flip` (default) on one upstream, and the VirtualService routing flip.bench to it. */
function flipService(upstreamPort: number): KObj[] {
  return [
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'flip', namespace: 'default' }, spec: { type: 'ClusterIP', clusterIP: '10.96.255.1', selector: { app: 'flip' }, ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }] } },
    flipSlice(upstreamPort),
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'flip-0', namespace: 'default', labels: { app: 'flip' } }, spec: { nodeName: 'node-0', containers: [{ name: 'app', image: 'example/app:1', ports: [{ name: 'http', containerPort: upstreamPort }] }] }, status: { phase: 'Running', podIP: '127.0.0.1', podIPs: [{ ip: '127.0.0.1' }], conditions: [{ type: 'Ready', status: 'True' }] } },
    { apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'vs-flip', namespace: 'default' }, spec: { hosts: ['flip.bench'], gateways: ['gw'], http: [{ route: [{ destination: { host: 'flip', port: { number: 80 } } }] }] } },
  ];
}

function flipSlice(upstreamPort: number): KObj {
  return { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'flip-abcde', namespace: 'default', labels: { 'kubernetes.io/service-name': 'flip' } }, addressType: 'IPv4', endpoints: [{ addresses: ['127.0.0.1'], conditions: { ready: true, serving: true, terminating: false }, targetRef: { kind: 'Pod', name: 'flip-0', namespace: 'default' } }], ports: [{ name: 'http', port: upstreamPort, protocol: 'TCP' }] };
}

/** `n` changes of the EndpointSlice of Service `flip`, between upstreams a and b; each timed to the first response from the new one. Sorted. */
async function endpointFlips(port: number, n: number, change: (slice: KObj) => void, a: { name: string; port: number }, b: { name: string; port: number }): Promise<number[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const want = i % 2 === 0 ? b : a;
    const t0 = performance.now();
    change(flipSlice(want.port));
    for (;;) {
      const r = await http(port, '/', { headers: { host: 'flip.bench' }, agent });
      if (r.headers['x-upstream'] === want.name) break;
      if (performance.now() - t0 > 20_000) throw new Error(`endpoint change ${i} not applied after 20 s`);
    }
    times.push(performance.now() - t0);
  }
  agent.destroy();
  return times.sort((x, y) => x - y);
}

function registry(): KObj[] {
  const docs: KObj[] = [];
  for (let s = 0; s < SERVICES; s++) {
    const ns = `team-${s % 20}`;
    docs.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: `svc-${s}`, namespace: ns, labels: { app: `svc-${s}` } }, spec: { type: 'ClusterIP', clusterIP: `10.96.${s >> 8}.${s & 255}`, selector: { app: `svc-${s}` }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] } });
    const endpoints: KObj[] = [];
    for (let e = 0; e < ENDPOINTS_PER_SLICE; e++) {
      const ip = `10.1.${(s * ENDPOINTS_PER_SLICE + e) >> 8}.${(s * ENDPOINTS_PER_SLICE + e) & 255}`;
      const pod = `svc-${s}-pod-${e}`;
      endpoints.push({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName: `node-${e}`, targetRef: { kind: 'Pod', name: pod, namespace: ns } });
      docs.push({ apiVersion: 'v1', kind: 'Pod', metadata: { name: pod, namespace: ns, labels: { app: `svc-${s}`, version: `v${e % 2}`, 'pod-template-hash': 'abc123' } }, spec: { nodeName: `node-${e}`, serviceAccountName: 'default', containers: [{ name: 'app', image: 'example/app:1', ports: [{ containerPort: 8080 }] }] }, status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] } });
    }
    docs.push({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: `svc-${s}-abcde`, namespace: ns, labels: { 'kubernetes.io/service-name': `svc-${s}` } }, addressType: 'IPv4', endpoints, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] });
  }
  return docs;
}

async function timeToReady(start: () => Promise<GatewayProcess>): Promise<{ g: GatewayProcess; ms: number; mem: { rssMB: number; hwmMB: number } }> {
  const t0 = performance.now();
  const g = await start();
  const ms = Math.round(performance.now() - t0);
  // Let the start-up settle (the first reload after ready, GC) before reading memory.
  await new Promise((r) => setTimeout(r, 1500));
  return { g, ms, mem: memory(g.proc.pid!) };
}

const pct = (xs: number[], p: number): number => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

/**
 * `n` changes of VirtualService vs-0 (a response header flipping between two values), each timed
 * from `change()` returning to the first response carrying the new value. Sorted.
 */
async function flips(port: number, n: number, change: (vs: KObj) => void, base: KObj): Promise<number[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const want = i % 2 === 0 ? 'b' : 'a';
    const vs = structuredClone(base);
    vs.spec.http = [{ route: [{ destination: { host: 'backend.bench', port: { number: 80 } } }], headers: { response: { set: { 'x-flip': want } } } }];
    const t0 = performance.now();
    change(vs);
    for (;;) {
      const r = await http(port, '/', { headers: { host: 'vs-0.bench' }, agent });
      if (r.headers['x-flip'] === want) break;
      if (performance.now() - t0 > 20_000) throw new Error(`change ${i} not applied after 20 s`);
    }
    times.push(performance.now() - t0);
  }
  agent.destroy();
  return times.sort((x, y) => x - y);
}

async function main(): Promise<void> {
  const a = await startEcho('a');
  const b = await startEcho('b');
  const [port, port2] = (await freePorts(2)) as [number, number];
  const config = istio(port, a.port);
  const only = process.env.BENCH_KUBE_ONLY;

  if (only !== 'registry') {
    // Baseline: the same Istio configuration from files (vs-0 in a file of its own, changed below).
    const fileDocs = istio(port2, a.port);
    const files = await timeToReady(() => startGateway({ files: { 'c.yaml': yamlDocs(...fileDocs.filter((_d, i) => i !== 2)), 'vs0.yaml': yamlDocs(fileDocs[2]!) }, readyTimeoutMs: 120_000 }));
    console.log(`files (${VS} VirtualServices): ready in ${files.ms} ms, RSS ${files.mem.rssMB} MB (peak ${files.mem.hwmMB} MB)`);
    const fileTimes = await flips(port2, CHANGES, (vs) => files.g.writeFile('vs0.yaml', yamlDocs(vs)), fileDocs[2]!);
    console.log(`file change → traffic over ${CHANGES} changes (the same ${VS} VirtualServices from files): p50 ${Math.round(pct(fileTimes, 50))} ms, p99 ${Math.round(pct(fileTimes, 99))} ms; RSS after ${memory(files.g.proc.pid!).rssMB} MB`);
    await files.g.stop();
  }

  const api = new KubeApiServer({ bookmarkIntervalMs: 60_000 });
  await api.start();
  if (only !== 'registry') {
    // A small configuration first: a Gateway, a ServiceEntry, one VirtualService.
    api.putAll(config.slice(0, 3));
    const small = await startGateway({ files: {}, kubeconfig: api.defaultKubeconfig, readyTimeoutMs: 60_000 });
    const smallTimes = await flips(port, CHANGES, (vs) => api.put(vs), config[2]!);
    console.log(`API event → traffic over ${CHANGES} changes (3 objects): p50 ${Math.round(pct(smallTimes, 50))} ms, p99 ${Math.round(pct(smallTimes, 99))} ms`);
    await small.stop();
    api.putAll(config);
    const istioOnly = await timeToReady(() => startGateway({ files: {}, kubeconfig: api.defaultKubeconfig, readyTimeoutMs: 120_000 }));
    await istioOnly.g.stop();
    console.log(`--kubernetes (${VS} VirtualServices): ready in ${istioOnly.ms} ms, RSS ${istioOnly.mem.rssMB} MB (peak ${istioOnly.mem.hwmMB} MB)`);
  }

  api.putAll(config);
  const reg = [...registry(), ...flipService(a.port)];
  api.putAll(reg);
  const full = await timeToReady(() => startGateway({ files: {}, kubeconfig: api.defaultKubeconfig, readyTimeoutMs: 120_000, args: process.env.BENCH_KUBE_LOG ? ['--log-level', process.env.BENCH_KUBE_LOG === 'debug' ? 'debug' : 'info'] : [], nodeArgs }));
  console.log(
    `--kubernetes (${VS} VirtualServices + ${SERVICES} Services, ${SERVICES} EndpointSlices / ${SERVICES * ENDPOINTS_PER_SLICE} endpoints, ${SERVICES * ENDPOINTS_PER_SLICE} Pods; ${config.length + reg.length} objects): ready in ${full.ms} ms, RSS ${full.mem.rssMB} MB (peak ${full.mem.hwmMB} MB)`,
  );

  // API event → traffic. BENCH_KUBE_ROUNDS=R repeats both kinds of change R times (RSS after each
  // round: does it level off?); the figures are those of the first round. BENCH_KUBE_HEAP=1 has the
  // gateway write a heap snapshot (with --heapsnapshot-signal=SIGUSR2 in BENCH_KUBE_NODE_ARGS) at
  // ready and after the last round, into the working directory.
  const g = full.g;
  const rounds = Math.max(1, Number(process.env.BENCH_KUBE_ROUNDS ?? 1));
  const heap = async (): Promise<void> => {
    if (!process.env.BENCH_KUBE_HEAP) return;
    g.proc.kill('SIGUSR2');
    // Writing it stops the process for a while: wait until it answers again.
    await new Promise((r) => setTimeout(r, 2000));
    await g.admin('/healthz/ready').catch(() => undefined);
  };
  await heap();
  for (let round = 0; round < rounds; round++) {
    const times = await flips(port, CHANGES, (vs) => api.put(vs), config[2]!);
    const eds = await endpointFlips(port, CHANGES, (slice) => api.put(slice), a, b);
    if (round === 0) {
      console.log(`API event → traffic over ${CHANGES} VirtualService changes (${config.length + reg.length} objects held): p50 ${Math.round(pct(times, 50))} ms, p99 ${Math.round(pct(times, 99))} ms, max ${Math.round(times[times.length - 1]!)} ms`);
      console.log(`API event → traffic over ${CHANGES} EndpointSlice changes (${config.length + reg.length} objects held): p50 ${Math.round(pct(eds, 50))} ms, p99 ${Math.round(pct(eds, 99))} ms, max ${Math.round(eds[eds.length - 1]!)} ms`);
    }
    console.log(`after ${(round + 1) * 2 * CHANGES} changes: RSS ${memory(g.proc.pid!).rssMB} MB`);
  }
  await heap();
  if (process.env.BENCH_KUBE_LOG) {
    const ms = g.logs().split('\n').filter((l) => l.includes('"configuration applied"')).map((l) => (JSON.parse(l) as { ms?: number }).ms);
    console.log(`"configuration applied" ms (from the debounced change to applied): ${ms.join(' ')}`);
    // BENCH_KUBE_LOG=debug: the median of each stage, changes of endpoints only apart from the others.
    const staged = g.logs().split('\n').filter((l) => l.includes('"configuration applied"') && l.includes('"stages"')).map((l) => (JSON.parse(l) as { stages: Record<string, number> }).stages);
    for (const [what, list] of [['endpoints only', staged.filter((x) => 'resolve-endpoints' in x)], ['other', staged.filter((x) => 'resolve' in x)]] as const) {
      if (list.length === 0) continue;
      const keys = [...new Set(list.flatMap((x) => Object.keys(x)))];
      console.log(`stages, median ms over ${list.length} reloads (${what}): ${keys.map((k) => `${k} ${pct(list.map((x) => x[k] ?? 0).sort((p, q) => p - q), 50)}`).join(', ')}`);
    }
  }
  await g.stop();
  await api.close();
  await a.close();
  await b.close();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
