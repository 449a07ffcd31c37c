// One configuration version at a time: a reload swaps route tables, clusters and policies together,
// once the new clusters are warm (DNS answered), and a request keeps the version it started with.
// The new clusters here resolve by DNS through a test server that answers late (800 ms), which
// holds the reload in its warming phase while clients keep sending requests through it.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort, http, sleep, waitFor } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, serviceEntry, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

const HOST = 'swap.test';
/** How late the test DNS server answers the names of the new clusters. */
const DNS_DELAY_MS = 800;
const CLIENTS = 4;

let dns: TestDnsServer;
let logDir = '';
const echos: Record<string, Echo> = {};

function meshConfigMap(mesh: string): Obj {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'istio', namespace: 'istio-system' }, data: { mesh } };
}

/** A MESH_EXTERNAL ServiceEntry resolved by DNS: `host` on port 80, its endpoint a DNS name. */
function dnsService(name: string, host: string, backend: string, port: number): Obj {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'ServiceEntry',
    metadata: { name, namespace: 'default' },
    spec: { hosts: [host], location: 'MESH_EXTERNAL', resolution: 'DNS', ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], endpoints: [{ address: backend, ports: { http: port } }] },
  };
}

/** The access log of a version: its tag, the response code and the cluster the request went to. */
const logConfig = (file: string, tag: string): Obj => meshConfigMap(`accessLogFile: ${file}\naccessLogFormat: "${tag} %RESPONSE_CODE% %UPSTREAM_CLUSTER%\\n"\n`);

/** v1: swap.test → cluster a (STATIC, echo "a"). */
const v1 = (log: string): Obj[] => [
  serviceEntry('a', 'a.svc.test', 80, { endpoints: [{ address: '127.0.0.1', ports: { http: echos.a!.port } }] }),
  virtualService('swap', [HOST], [{ route: [dest('a.svc.test')] }]),
  logConfig(log, 'v1'),
];

/** v2: swap.test → cluster b (DNS, answered late); cluster a removed; another log format. */
const v2 = (log: string): Obj[] => [
  dnsService('b', 'b.ext.test', 'b.backend.test', echos.b!.port),
  virtualService('swap', [HOST], [{ route: [dest('b.ext.test')] }]),
  logConfig(log, 'v2'),
];

/** v3: v2 plus a new host whose route needs a new cluster c (DNS, answered late). */
const v3 = (log: string): Obj[] => [
  ...v2(log),
  dnsService('c', 'c.ext.test', 'c.backend.test', echos.c!.port),
  virtualService('fresh', ['fresh.swap.test'], [{ route: [dest('c.ext.test')] }]),
];

interface Load {
  statuses: Map<number, number>;
  /** Per client: the upstream names of its 200 answers, in order. */
  names: string[][];
  /** Anything but a 200 (status and body), or the client's error. */
  errors: string[];
  last(): string | undefined;
  stop(): Promise<void>;
}

/** How long the clients keep sending at most: longer than any swap may take (`swapped` waits 15 s). */
const LOAD_MAX_MS = 30_000;

/**
 * `CLIENTS` keep-alive clients sending GETs in a loop until stopped (client 0 often slow: in flight
 * across the swap). Bounded by time, not by count: a count runs out early on a fast machine, or
 * before a swap that a loaded one makes slow.
 */
function load(port: number, host: string): Load {
  const statuses = new Map<number, number>();
  const names: string[][] = [];
  const errors: string[] = [];
  let running = true;
  let last: string | undefined;
  const loops: Array<Promise<void>> = [];
  const deadline = Date.now() + LOAD_MAX_MS;
  for (let c = 0; c < CLIENTS; c++) {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const mine: string[] = [];
    names.push(mine);
    loops.push(
      (async () => {
        for (let i = 0; running && Date.now() < deadline; i++) {
          try {
            const slow = c === 0 && i % 2 === 0;
            const r = await http(port, '/', { agent, headers: { host, ...(slow ? { 'x-test-delay': '150' } : {}) } });
            statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
            if (r.status === 200) mine.push((last = r.json.name as string));
            else errors.push(`${r.status} ${r.text}`.trim());
          } catch (e) {
            errors.push((e as Error).message);
          }
        }
        agent.destroy();
      })(),
    );
  }
  return {
    statuses,
    names,
    errors,
    last: () => last,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

beforeAll(async () => {
  for (const n of ['a', 'b', 'c']) echos[n] = await startEcho(n);
  dns = await startDnsServer({ 'b.backend.test': { addresses: ['127.0.0.1'], ttl: 300 }, 'c.backend.test': { addresses: ['127.0.0.1'], ttl: 300 } });
  dns.delays.set('b.backend.test', DNS_DELAY_MS);
  dns.delays.set('c.backend.test', DNS_DELAY_MS);
  logDir = mkdtempSync(join(tmpdir(), 'gatehouse-swap-'));
}, 20_000);

afterAll(async () => {
  for (const e of Object.values(echos)) await e.close();
  await dns?.close();
  if (logDir) rmSync(logDir, { recursive: true, force: true });
});

for (const workers of ['1', '2']) {
  describe(`one version at a time (--workers ${workers})`, () => {
    let gw: GatewayProcess;
    let port: number;
    let logFile: string;
    const write = (docs: Obj[]): void => gw.writeFile('config.yaml', yamlDocs(gateway('gw', port), ...docs));
    /** Waits up to 15 s for the new version to answer; if it does not, says what the clients and the gateway saw. */
    const swapped = async (done: () => boolean, l: { statuses: Map<number, number>; errors: string[] }): Promise<void> => {
      try {
        await waitFor(done, 15_000);
      } catch (e) {
        throw new Error(`${(e as Error).message}; statuses ${JSON.stringify([...l.statuses])}, errors ${JSON.stringify(l.errors.slice(-5))}; gateway log:\n${gw.logs().slice(-4000)}`);
      }
    };

    beforeAll(async () => {
      logFile = join(logDir, `access-${workers}.log`);
      port = await freePort();
      gw = await startGateway({
        files: { 'config.yaml': yamlDocs(gateway('gw', port), ...v1(logFile)) },
        args: ['--workers', workers],
        env: { GATEHOUSE_DNS_SERVERS: dns.address },
      });
    }, 20_000);

    afterAll(async () => {
      await gw?.stop();
    });

    it('a route moved to a new cluster while its old cluster is removed: no 503 (or any error) under load through the reload', async () => {
      expect((await http(port, '/', { headers: { host: HOST } })).json.name).toBe('a');
      const l = load(port, HOST);
      await sleep(200);
      const before = l.names.map((n) => n.length);
      write(v2(logFile));
      // The swap happens once b's DNS answer arrived; then a little more load on the new version.
      await swapped(() => l.last() === 'b', l);
      await sleep(300);
      await l.stop();
      expect(l.errors).toEqual([]);
      expect([...l.statuses.keys()]).toEqual([200]);
      // Each client sees one switch: a, ..., a, b, ..., b.
      for (const seq of l.names) expect(seq.join(' ')).toMatch(/^(a )+b( b)*$/);
      // Requests were served by the old version while the new one warmed (the window was there).
      expect(l.names.some((seq, i) => seq.slice(before[i]).includes('a'))).toBe(true);
    });

    it('each request is logged in the format of the version that routed it (policies swap with the tables)', async () => {
      const lines = readFileSync(logFile, 'utf8').split('\n').filter((x) => x !== '');
      expect(lines.some((x) => x === 'v1 200 outbound|80||a.svc.test')).toBe(true);
      expect(lines.some((x) => x === 'v2 200 outbound|80||b.ext.test')).toBe(true);
      expect(lines.filter((x) => x !== 'v1 200 outbound|80||a.svc.test' && x !== 'v2 200 outbound|80||b.ext.test')).toEqual([]);
    });

    it('a new route that needs a new cluster: its first requests already reach it (no 503 NC while it warms)', async () => {
      const l = load(port, 'fresh.swap.test');
      await sleep(200);
      write(v3(logFile));
      await swapped(() => l.last() === 'c', l);
      await sleep(200);
      await l.stop();
      // Before the swap the host has no route (404 NR), after it every request reaches c.
      expect([...l.statuses.keys()].sort()).toEqual([200, 404]);
      expect(l.errors.filter((e) => e !== '404')).toEqual([]);
      for (const seq of l.names) expect(seq.every((n) => n === 'c')).toBe(true);
    });
  });
}
