// What an Istio ingress gateway adds to, removes from and forwards with each request and response
// (Envoy's edge behaviour: use_remote_address, request id, attempt count, x-envoy-* sanitizing),
// on every downstream engine (test/helpers/engines.ts).
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { ENGINES, ENGINE_GATEWAYS, EngineSet, checkSkipTable, itOn, type EngineClient, type SkipTable } from '../helpers/engines.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const SKIPS: SkipTable = {
  'hop-by-hop headers named in Connection are not forwarded': {
    h2c: 'HTTP/2 has no Connection header: a client may not send one (RFC 9113 8.2.2)',
    h2: 'HTTP/2 has no Connection header: a client may not send one (RFC 9113 8.2.2)',
  },
};

let gw: GatewayProcess;
let echo: Echo;
const engines = new EngineSet();

beforeAll(async () => {
  echo = await startEcho('hdr');
  const gateways = await engines.gateways();
  gw = await startGateway({
    files: { 'config.yaml': yamlDocs(...gateways, ...service('hdr', { v1: echo.port }), virtualService('hdr', ['hdr.test'], [{ route: [dest('hdr')] }], { gateways: ENGINE_GATEWAYS })) },
  });
});

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
  engines.close();
});

describe.each(ENGINES)('%s', (name) => {
  const e: EngineClient = engines.clients[name];
  const seen = async (headers: Record<string, string | string[]> = {}, host = 'hdr.test') => {
    const r = await e.request('/h', { headers: { host, ...headers } });
    expect(r.status).toBe(200);
    return { res: r, up: r.json.headers as Record<string, string> };
  };

  describe('proxy headers seen by the upstream', () => {
    itOn(e, SKIPS, 'x-forwarded-for is the client address when the client sent none', async () => {
      expect((await seen()).up['x-forwarded-for']).toBe('127.0.0.1');
    });
    itOn(e, SKIPS, "x-forwarded-for appends the client address to the client's own x-forwarded-for", async () => {
      expect((await seen({ 'x-forwarded-for': '203.0.113.7' })).up['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
    });
    itOn(e, SKIPS, 'x-forwarded-proto is set to the scheme the client used (a client value is overwritten at the edge)', async () => {
      expect((await seen()).up['x-forwarded-proto']).toBe(e.scheme);
      expect((await seen({ 'x-forwarded-proto': e.scheme === 'http' ? 'https' : 'http' })).up['x-forwarded-proto']).toBe(e.scheme);
    });
    itOn(e, SKIPS, 'x-request-id is generated as a UUID when absent, unique per request', async () => {
      const a = (await seen()).up['x-request-id'];
      const b = (await seen()).up['x-request-id'];
      expect(a).toMatch(UUID);
      expect(b).toMatch(UUID);
      expect(a).not.toBe(b);
    });
    itOn(e, SKIPS, "a client's own x-request-id is kept", async () => {
      const { up } = await seen({ 'x-request-id': 'client-id-123' });
      expect(up['x-request-id']).toBe('client-id-123');
    });
    itOn(e, SKIPS, 'x-envoy-attempt-count is 1 on the first attempt', async () => {
      expect((await seen()).up['x-envoy-attempt-count']).toBe('1');
    });
    itOn(e, SKIPS, 'client-supplied x-envoy-* headers are stripped', async () => {
      const { up } = await seen({ 'x-envoy-foo': 'evil', 'x-envoy-upstream-rq-timeout-ms': '1', 'x-custom': 'ok' });
      expect(up['x-envoy-foo']).toBeUndefined();
      expect(up['x-envoy-upstream-rq-timeout-ms']).toBeUndefined();
      expect(up['x-custom']).toBe('ok');
    });
    itOn(e, SKIPS, 'the Host header is forwarded as the client sent it', async () => {
      expect((await seen()).up.host).toBe('hdr.test');
      expect((await seen({}, 'hdr.test:8080')).up.host).toBe('hdr.test:8080');
    });
    itOn(e, SKIPS, 'a request header sent twice reaches the upstream with both values', async () => {
      const r = await e.request('/h', { headers: { host: 'hdr.test', 'x-multi': ['a', 'b'] } });
      const raw = r.json.rawHeaders as string[];
      const values = raw.filter((_, i) => i % 2 === 1 && raw[i - 1]!.toLowerCase() === 'x-multi');
      expect(values.join(',').replace(/\s/g, '')).toBe('a,b');
    });
    itOn(e, SKIPS, 'hop-by-hop headers named in Connection are not forwarded', async () => {
      const { up } = await seen({ connection: 'keep-alive, x-hop', 'x-hop': 'drop-me', 'x-stay': 'here' });
      expect(up['x-hop']).toBeUndefined();
      expect(up['x-stay']).toBe('here');
    });
    itOn(e, SKIPS, 'x-envoy-external-address carries the client address', async () => {
      expect((await seen()).up['x-envoy-external-address']).toBe('127.0.0.1');
    });
  });

  describe('proxy headers on the response', () => {
    itOn(e, SKIPS, 'server is istio-envoy (replacing the upstream server header)', async () => {
      const { res } = await seen();
      expect(res.headers.server).toBe('istio-envoy');
    });
    itOn(e, SKIPS, 'x-envoy-upstream-service-time is a number of milliseconds', async () => {
      const { res } = await seen();
      expect(res.headers['x-envoy-upstream-service-time']).toMatch(/^\d+$/);
    });
    itOn(e, SKIPS, 'x-envoy-upstream-service-time reflects a slow upstream', async () => {
      const { res } = await seen({ 'x-test-delay': '150' });
      expect(Number(res.headers['x-envoy-upstream-service-time'])).toBeGreaterThanOrEqual(140);
    });
    itOn(e, SKIPS, 'several Set-Cookie headers from the upstream stay separate headers', async () => {
      const { res } = await seen({ 'x-test-cookies': '3' });
      expect(res.headers['set-cookie']).toEqual(['c0=0; Path=/', 'c1=1; Path=/', 'c2=2; Path=/']);
    });
    itOn(e, SKIPS, 'upstream response headers are passed through', async () => {
      const { res } = await seen();
      expect(res.headers['x-upstream']).toBe('hdr');
      expect(res.headers['content-type']).toBe('application/json');
    });
  });
});

checkSkipTable(SKIPS);
