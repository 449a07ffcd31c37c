// The second guard against header injection: validation refuses CR/LF/NUL in configured header
// values, but a replica (`--xds-address`) takes its routes from a control plane without validating
// them. Here a control plane serves a route whose header edits carry CR LF (built with resolve(),
// which does not validate): the replica's writers drop those values instead of writing them raw
// (uWS would have sent `X-Injected: 1` as a header line of its own) or throwing (node engine: 503).
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve } from '../../src/controlplane/resolve.js';
import { SnapshotViews } from '../../src/controlplane/xds/snapshot-views.js';
import { XdsServer } from '../../src/controlplane/xds/server.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePorts, http, rawExchange } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { service, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

let xds: XdsServer;
let replica: GatewayProcess;
let echo: Echo;
let h1Port: number;
let h2Port: number;

beforeAll(async () => {
  echo = await startEcho('up');
  [h1Port, h2Port] = (await freePorts(2)) as [number, number];
  const gw: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name: 'gw', namespace: 'default' },
    spec: {
      selector: { istio: 'replica' },
      servers: [
        { port: { number: h1Port, name: 'http', protocol: 'HTTP' }, hosts: ['*'] },
        { port: { number: h2Port, name: 'http2', protocol: 'HTTP2' }, hosts: ['*'] },
      ],
    },
  };
  const vs = virtualService('inject', ['inject.test'], [
    { headers: { response: { set: { 'x-note': 'a\r\nX-Injected: 1', 'x-fine': 'ok' } } }, route: [{ destination: { host: 'app', subset: 'v1' } }] },
  ]);
  const { resources, problems } = parseYamlText(yamlDocs(gw, ...service('app', { v1: echo.port }), vs), 'cp.yaml');
  expect(problems).toEqual([]);
  const opts = (labels: Record<string, string>) => ({ labels, namespace: 'istio-system', bind: '127.0.0.1', mesh: DEFAULT_MESH_CONFIG });
  const views = new SnapshotViews(() => undefined, (labels) => resolve(resources, opts(labels)));
  views.update(resolve(resources, opts({ istio: 'replica' })));
  xds = new XdsServer(views, { log: pino({ level: 'silent' }), debounceMs: 5, shutdownGraceMs: 200 });
  const xdsPort = await xds.listen('127.0.0.1', 0);
  replica = await startGateway({ files: {}, xdsAddress: `127.0.0.1:${xdsPort}`, args: ['--labels', 'istio=replica'], readyTimeoutMs: 15_000 });
}, 30_000);

afterAll(async () => {
  await replica?.stop();
  await xds?.close();
  await echo?.close();
});

describe('header values with CR/LF that reach a replica anyway', () => {
  it('uWS: the injected line never appears on the wire; the route still answers 200 with its valid edits', async () => {
    const r = await rawExchange(h1Port, 'GET / HTTP/1.1\r\nHost: inject.test\r\nConnection: close\r\n\r\n', { timeoutMs: 3000 });
    const head = r.data.slice(0, r.data.indexOf('\r\n\r\n')).toLowerCase();
    expect(head).toMatch(/^http\/1\.1 200/);
    expect(head).not.toContain('x-injected');
    expect(head).not.toContain('x-note');
    expect(head).toContain('x-fine: ok');
  });

  it('node engine (HTTP2 port, HTTP/1.1 client): 200 instead of a broken route', async () => {
    const r = await http(h2Port, '/', { headers: { host: 'inject.test' } });
    expect(r.status).toBe(200);
    expect(r.headers['x-injected']).toBeUndefined();
    expect(r.headers['x-note']).toBeUndefined();
    expect(r.headers['x-fine']).toBe('ok');
  });
});
