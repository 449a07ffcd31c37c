// `--workers 2`: the data plane on two workers sharing the listener port (SO_REUSEPORT): node:cluster
// processes by default, worker threads with `--worker-mode threads` (where only worker 0 can serve
// node:net ports; worker-processes.test.ts covers every listener kind on processes). Both workers
// take connections, a config reload reaches both, the merged /stats/prometheus counts
// every request exactly once, and SIGTERM drains (readiness 503, the request in flight finishes,
// exit 0).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { freePort, http, rawExchange, rawStatus, sleep, waitFor } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const HOST = 'workers.test';

let gw: GatewayProcess;
let port: number;
let v1: Echo;
let v2: Echo;

const vsTo = (subset: string): string => yamlDocs(virtualService('w', [HOST], [{ route: [dest('app', subset)] }]));
const get = (path = '/') => http(port, path, { headers: { host: HOST } });

interface WorkerRow {
  worker: number;
  state: string;
  requests: number;
}
const workers = async (): Promise<WorkerRow[]> => (await gw.admin('/workers')).json.workers;
const requestsTotal = async (): Promise<number> => sumSamples(findSamples(parsePrometheus((await gw.admin('/stats/prometheus')).text), 'istio_requests_total'));

beforeAll(async () => {
  v1 = await startEcho('v1');
  v2 = await startEcho('v2');
  port = await freePort();
  gw = await startGateway({
    files: { 'gw.yaml': yamlDocs(gateway('gw', port)), 'svc.yaml': yamlDocs(...service('app', { v1: v1.port, v2: v2.port })), 'vs.yaml': vsTo('v1') },
    args: ['--workers', '2'],
  });
});

afterAll(async () => {
  await gw?.stop();
  await v1?.close();
  await v2?.close();
});

describe('--workers 2', () => {
  it('both worker processes take connections on the shared port, and the merged metrics count every request exactly once', async () => {
    const before = await workers();
    expect(before.map((w) => w.state)).toEqual(['ready', 'ready']);
    expect(await requestsTotal()).toBe(0);
    // 40 fresh connections (one request each), a few at a time.
    for (let i = 0; i < 40; i += 8) {
      const rs = await Promise.all(Array.from({ length: 8 }, () => get()));
      for (const r of rs) expect(r.status).toBe(200);
    }
    const after = await workers();
    expect(after).toHaveLength(2);
    for (const w of after) expect(w.requests).toBeGreaterThan(0);
    expect(after[0]!.requests + after[1]!.requests).toBe(40);
    expect(await requestsTotal()).toBe(40);
    // Process metrics come from the main thread, once.
    expect(findSamples(parsePrometheus((await gw.admin('/stats/prometheus')).text), 'process_start_time_seconds')).toHaveLength(1);
    const listeners = (await gw.admin('/listeners?format=json')).json.listener_statuses;
    expect(listeners.map((l: { address: string }) => l.address)).toEqual([`127.0.0.1:${port}`]);
  });

  it('a config reload reaches both workers: the new route is seen on 20 fresh connections', async () => {
    gw.writeFile('vs.yaml', vsTo('v2'));
    await waitFor(async () => (await get()).json?.name === 'v2', 3000);
    // Give the other worker the same moment, then every fresh connection must see v2.
    await waitFor(async () => (await workers()).every((w) => w.state === 'ready'), 3000);
    const names = await Promise.all(Array.from({ length: 20 }, async () => (await get()).json?.name));
    expect(names).toEqual(Array(20).fill('v2'));
  });

  it('SIGTERM: readiness 503, the slow request in flight completes, exit 0', async () => {
    expect((await gw.admin('/healthz/ready')).status).toBe(200);
    const started = Date.now();
    const slow = http(port, '/slow', { headers: { host: HOST, 'x-test-delay': '800' } });
    await sleep(150);
    gw.proc.kill('SIGTERM');
    await sleep(100);
    expect((await gw.admin('/healthz/ready')).status).toBe(503);
    const r = await slow;
    expect(r.status).toBe(200);
    expect(r.json.url).toBe('/slow');
    expect(await gw.exited).toBe(0);
    expect(Date.now() - started).toBeLessThan(4000);
  });
});

describe('--workers 2 --worker-mode threads --http1-engine strict', () => {
  let strictGw: GatewayProcess;
  let strictPort: number;
  beforeAll(async () => {
    strictPort = await freePort();
    strictGw = await startGateway({
      files: { 'gw.yaml': yamlDocs(gateway('gw', strictPort)), 'svc.yaml': yamlDocs(...service('app', { v1: v1.port })), 'vs.yaml': vsTo('v1') },
      args: ['--workers', '2', '--worker-mode', 'threads', '--http1-engine', 'strict'],
    });
  });
  afterAll(async () => {
    await strictGw?.stop();
  });

  it('threads: the strict engine serves the port from worker 0 only (node:net listeners cannot share a port across threads)', async () => {
    const rs = await Promise.all(Array.from({ length: 20 }, () => http(strictPort, '/', { headers: { host: HOST } })));
    for (const r of rs) expect(r.status).toBe(200);
    const rows = (await strictGw.admin('/workers')).json.workers as Array<WorkerRow & { thread_id?: number; pid?: number }>;
    // Threads of the gateway's own process.
    for (const w of rows) expect(w.thread_id).toBeGreaterThan(0);
    expect(rows.some((w) => w.pid !== undefined)).toBe(false);
    expect(rows.map((w) => [w.state, w.requests])).toEqual([
      ['ready', 20],
      ['ready', 0],
    ]);
    const listeners = (await strictGw.admin('/listeners?format=json')).json.listener_statuses;
    expect(listeners.map((l: { address: string; engine: string }) => [l.address, l.engine])).toEqual([[`127.0.0.1:${strictPort}`, 'node:http']]);
    // It is the strict engine: whitespace before a colon is a 400, not a hang.
    expect(rawStatus((await rawExchange(strictPort, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-A : b\r\n\r\n`, { timeoutMs: 2000 })).data)).toBe(400);
  });
});

describe('--workers left out', () => {
  it('defaults to one data-plane worker per core the process may use', async () => {
    const echo = await startEcho('d');
    const p = await freePort();
    const cores = (await import('node:os')).availableParallelism();
    const g = await startGateway({
      files: { 'gw.yaml': yamlDocs(gateway('gw', p)), 'svc.yaml': yamlDocs(...service('app', { v1: echo.port, v2: echo.port })), 'vs.yaml': yamlDocs(virtualService('w', [HOST], [{ route: [dest('app', 'v1')] }])) },
      defaultWorkers: true,
    });
    try {
      const r = await http(p, '/', { headers: { host: HOST } });
      expect(r.status).toBe(200);
      const w = await g.admin('/workers');
      // One core: everything on the main thread (no /workers); more: that many worker processes.
      if (cores > 1) expect(w.json.workers.map((x: WorkerRow) => x.state)).toEqual(Array(cores).fill('ready'));
      else expect(w.status).toBe(404);
    } finally {
      await g.stop();
      await echo.close();
    }
  });
});
