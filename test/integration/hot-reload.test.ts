// Config files changed under a running gateway: applied within the contract's 1 s (checked with
// 1.5 s), invalid changes rejected with their problems logged, connections and requests in flight
// unaffected, listeners opened and closed as Gateway ports come and go.
import { Agent } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePorts, http, sleep, waitFor } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const HOST = 'reload.test';
const APPLY_MS = 1500;

let gw: GatewayProcess;
let port: number;
let port2: number;
let v1: Echo;
let v2: Echo;

const vsTo = (subset: string): string => yamlDocs(virtualService('reload', [HOST], [{ route: [dest('app', subset)] }]));

beforeAll(async () => {
  v1 = await startEcho('v1');
  v2 = await startEcho('v2');
  [port, port2] = (await freePorts(2)) as [number, number];
  gw = await startGateway({
    files: {
      'gw.yaml': yamlDocs(gateway('gw', port)),
      'svc.yaml': yamlDocs(...service('app', { v1: v1.port, v2: v2.port })),
      'vs.yaml': vsTo('v1'),
    },
  });
});

afterAll(async () => {
  await gw?.stop();
  await v1?.close();
  await v2?.close();
});

const get = (path = '/', agent?: Agent, p = port) => http(p, path, { headers: { host: HOST }, ...(agent ? { agent } : {}) });
const upstreamName = async (): Promise<string> => {
  const r = await get();
  return r.status === 200 ? r.json.name : `status ${r.status}`;
};

describe('hot reload', () => {
  it('a changed VirtualService routes new requests to the new destination within 1.5 s', async () => {
    expect(await upstreamName()).toBe('v1');
    const t0 = Date.now();
    gw.writeFile('vs.yaml', vsTo('v2'));
    await waitFor(async () => (await upstreamName()) === 'v2', APPLY_MS);
    expect(Date.now() - t0).toBeLessThanOrEqual(APPLY_MS + 200);
    // And it stays there.
    for (let i = 0; i < 5; i++) expect(await upstreamName()).toBe('v2');
  });

  it('an invalid change (a negative weight) is logged as `file:line: Kind/ns/name: path: message` and rejected; the last good config keeps serving', async () => {
    const bad = yamlDocs(virtualService('reload', [HOST], [{ route: [dest('app', 'v1', 50), dest('app', 'v2', -40)] }]));
    gw.writeFile('vs.yaml', bad);
    await waitFor(() => /vs\.yaml:\d+: VirtualService\/default\/reload: spec\.http\[0\]\.route\[1\]\.weight: .*-40/.test(gw.stdout()), APPLY_MS);
    // Give a wrongly-applied config time to show, then check nothing changed.
    await sleep(300);
    for (let i = 0; i < 6; i++) expect(await upstreamName()).toBe('v2');
    expect((await gw.admin('/healthz/ready')).status).toBe(200);
  });

  it('the problem line points at the offending line of the file', async () => {
    const m = /(\S*vs\.yaml):(\d+): VirtualService\/default\/reload: spec\.http\[0\]\.route\[1\]\.weight/.exec(gw.stdout());
    expect(m).not.toBeNull();
    const lines = (await import('node:fs')).readFileSync(`${gw.dir}/vs.yaml`, 'utf8').split('\n');
    expect(lines[Number(m![2]) - 1]).toMatch(/weight: -40/);
  });

  it('a change whose header value carries CR LF is rejected whole: nothing is injected, the last good config keeps serving', async () => {
    const bad = yamlDocs(
      virtualService('reload', [HOST], [{ headers: { response: { set: { 'x-note': 'a\r\nX-Injected: 1' } } }, route: [dest('app', 'v1')] }]),
    );
    gw.writeFile('vs.yaml', bad);
    await waitFor(() => /vs\.yaml:\d+: VirtualService\/default\/reload: spec\.http\[0\]\.headers\.response\.set\.x-note: must not contain CR or LF/.test(gw.stdout()), APPLY_MS);
    await sleep(300);
    for (let i = 0; i < 4; i++) {
      const r = await get();
      expect(r.json.name).toBe('v2');
      expect(r.headers['x-injected']).toBeUndefined();
      expect(r.headers['x-note']).toBeUndefined();
    }
    gw.writeFile('vs.yaml', vsTo('v2'));
  });

  it('a keep-alive connection opened before a reload keeps working after it and sees the new routes', async () => {
    gw.writeFile('vs.yaml', vsTo('v2'));
    await waitFor(async () => (await upstreamName()) === 'v2', APPLY_MS);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const before = await get('/ka', agent);
      expect(before.json.name).toBe('v2');
      gw.writeFile('vs.yaml', vsTo('v1'));
      await waitFor(async () => (await upstreamName()) === 'v1', APPLY_MS);
      const after = await get('/ka', agent);
      expect(after.status).toBe(200);
      expect(after.json.name).toBe('v1');
      expect(after.localPort).toBe(before.localPort);
    } finally {
      agent.destroy();
    }
  });

  it('a slow request in flight during a reload completes with 200', async () => {
    const inflight = http(port, '/slow', { headers: { host: HOST, 'x-test-delay': '1000' } });
    await waitFor(() => v1.requests.some((q) => q.url === '/slow'), 1000);
    gw.writeFile('vs.yaml', vsTo('v2'));
    await waitFor(async () => (await upstreamName()) === 'v2', APPLY_MS);
    const r = await inflight;
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ name: 'v1', url: '/slow' });
  });

  it('a removed VirtualService file removes its routes (404), adding it back restores them', async () => {
    gw.removeFile('vs.yaml');
    await waitFor(async () => (await get()).status === 404, APPLY_MS);
    gw.writeFile('vs.yaml', vsTo('v1'));
    await waitFor(async () => (await upstreamName()) === 'v1', APPLY_MS);
  });

  it('a new Gateway port opens a listener; removing it closes the listener', async () => {
    await expect(get('/', undefined, port2)).rejects.toThrow(/ECONNREFUSED/);
    gw.writeFile(
      'gw2.yaml',
      yamlDocs(
        gateway('gw2', port2),
        virtualService('reload2', ['second.test'], [{ directResponse: { status: 200, body: { string: 'second' } } }], { gateways: ['gw2'] }),
        virtualService('reload3', [HOST], [{ route: [dest('app', 'v1')] }], { gateways: ['gw2'] }),
      ),
    );
    await waitFor(async () => (await http(port2, '/', { headers: { host: 'second.test' } }).catch(() => null))?.text === 'second', APPLY_MS);
    expect((await gw.admin('/listeners')).text).toContain(`127.0.0.1_${port2}`);
    expect((await gw.admin('/healthz/ready')).status).toBe(200);
    // The first listener is untouched.
    expect(await upstreamName()).toBe('v1');

    // A request in flight on the listener being removed is drained, not cut.
    const inflight = http(port2, '/drain', { headers: { host: 'second.test' } });
    const inflightSlow = http(port2, '/slow-drain', { headers: { host: HOST, 'x-test-delay': '800' } });
    await inflight;
    gw.removeFile('gw2.yaml');
    await waitFor(async () => {
      try {
        await http(port2, '/', { headers: { host: 'second.test' }, timeoutMs: 500 });
        return false;
      } catch (e) {
        return /ECONNREFUSED/.test((e as Error).message);
      }
    }, APPLY_MS);
    expect((await gw.admin('/listeners')).text).not.toContain(`127.0.0.1_${port2}`);
    expect(await upstreamName()).toBe('v1');
    const drained = await inflightSlow;
    expect(drained.status).toBe(200);
    expect(drained.json).toMatchObject({ url: '/slow-drain' });
  });

  it('a changed WorkloadEntry port moves the subset to the new endpoint', async () => {
    expect(await upstreamName()).toBe('v1');
    // Subset v1 now selects a workload listening where v2 does.
    gw.writeFile('svc.yaml', yamlDocs(...service('app', { v1: v2.port, v2: v2.port })));
    await waitFor(async () => (await upstreamName()) === 'v2', APPLY_MS);
    gw.writeFile('svc.yaml', yamlDocs(...service('app', { v1: v1.port, v2: v2.port })));
    await waitFor(async () => (await upstreamName()) === 'v1', APPLY_MS);
  });

  it('the gateway stays ready through all the reloads', async () => {
    expect((await gw.admin('/healthz/ready')).status).toBe(200);
    expect(gw.proc.exitCode).toBeNull();
  });
});
