// Graceful shutdown on SIGTERM: readiness fails, listeners stop accepting, requests in flight finish.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort, http, sleep } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

let gw: GatewayProcess;
let port: number;
let echo: Echo;

beforeAll(async () => {
  echo = await startEcho('life');
  port = await freePort();
  gw = await startGateway({
    files: { 'config.yaml': yamlDocs(gateway('gw', port), ...service('life', { v1: echo.port }), virtualService('life', ['life.test'], [{ route: [dest('life')] }])) },
  });
});

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
});

describe('lifecycle: SIGTERM', () => {
  it('drains: readiness turns 503, new connections are refused, the request in flight completes, exit 0', async () => {
    expect((await gw.admin('/healthz/ready')).status).toBe(200);
    const started = Date.now();
    const inflight = http(port, '/slow', { headers: { host: 'life.test', 'x-test-delay': '800' } });
    await sleep(150);
    gw.proc.kill('SIGTERM');
    await sleep(100);
    expect((await gw.admin('/healthz/ready')).status).toBe(503);
    await expect(http(port, '/', { headers: { host: 'life.test' } })).rejects.toThrow(/ECONNREFUSED/);
    const r = await inflight;
    expect(r.status).toBe(200);
    expect(r.json.url).toBe('/slow');
    expect(await gw.exited).toBe(0);
    // Drained as soon as the last request finished, not after the full drain period.
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
