// What an Istio ingress gateway adds to, removes from and forwards with each request and response
// (Envoy's edge behaviour: use_remote_address, request id, attempt count, x-envoy-* sanitizing).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort, http } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

let gw: GatewayProcess;
let port: number;
let echo: Echo;

beforeAll(async () => {
  echo = await startEcho('hdr');
  port = await freePort();
  gw = await startGateway({
    files: { 'config.yaml': yamlDocs(gateway('gw', port), ...service('hdr', { v1: echo.port }), virtualService('hdr', ['hdr.test'], [{ route: [dest('hdr')] }])) },
  });
});

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
});

const seen = async (headers: Record<string, string> = {}, host = 'hdr.test') => {
  const r = await http(port, '/h', { headers: { host, ...headers } });
  expect(r.status).toBe(200);
  return { res: r, up: r.json.headers as Record<string, string> };
};

describe('proxy headers seen by the upstream', () => {
  it('x-forwarded-for is the client address when the client sent none', async () => {
    expect((await seen()).up['x-forwarded-for']).toBe('127.0.0.1');
  });
  it("x-forwarded-for appends the client address to the client's own x-forwarded-for", async () => {
    expect((await seen({ 'x-forwarded-for': '203.0.113.7' })).up['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
  });
  it('x-forwarded-proto is set to http (a client value is overwritten at the edge)', async () => {
    expect((await seen()).up['x-forwarded-proto']).toBe('http');
    expect((await seen({ 'x-forwarded-proto': 'https' })).up['x-forwarded-proto']).toBe('http');
  });
  it('x-request-id is generated as a UUID when absent, unique per request', async () => {
    const a = (await seen()).up['x-request-id'];
    const b = (await seen()).up['x-request-id'];
    expect(a).toMatch(UUID);
    expect(b).toMatch(UUID);
    expect(a).not.toBe(b);
  });
  it("a client's own x-request-id is kept", async () => {
    const { up } = await seen({ 'x-request-id': 'client-id-123' });
    expect(up['x-request-id']).toBe('client-id-123');
  });
  it('x-envoy-attempt-count is 1 on the first attempt', async () => {
    expect((await seen()).up['x-envoy-attempt-count']).toBe('1');
  });
  it('client-supplied x-envoy-* headers are stripped', async () => {
    const { up } = await seen({ 'x-envoy-foo': 'evil', 'x-envoy-upstream-rq-timeout-ms': '1', 'x-custom': 'ok' });
    expect(up['x-envoy-foo']).toBeUndefined();
    expect(up['x-envoy-upstream-rq-timeout-ms']).toBeUndefined();
    expect(up['x-custom']).toBe('ok');
  });
  it('the Host header is forwarded as the client sent it', async () => {
    expect((await seen()).up.host).toBe('hdr.test');
    expect((await seen({}, 'hdr.test:8080')).up.host).toBe('hdr.test:8080');
  });
  it('a request header sent twice reaches the upstream with both values', async () => {
    const r = await http(port, '/h', { headers: { host: 'hdr.test', 'x-multi': ['a', 'b'] } });
    const raw = r.json.rawHeaders as string[];
    const values = raw.filter((_, i) => i % 2 === 1 && raw[i - 1]!.toLowerCase() === 'x-multi');
    expect(values.join(',').replace(/\s/g, '')).toBe('a,b');
  });
  it('hop-by-hop headers named in Connection are not forwarded', async () => {
    const { up } = await seen({ connection: 'keep-alive, x-hop', 'x-hop': 'drop-me', 'x-stay': 'here' });
    expect(up['x-hop']).toBeUndefined();
    expect(up['x-stay']).toBe('here');
  });
  it('x-envoy-external-address carries the client address', async () => {
    expect((await seen()).up['x-envoy-external-address']).toBe('127.0.0.1');
  });
});

describe('proxy headers on the response', () => {
  it('server is istio-envoy (replacing the upstream server header)', async () => {
    const { res } = await seen();
    expect(res.headers.server).toBe('istio-envoy');
  });
  it('x-envoy-upstream-service-time is a number of milliseconds', async () => {
    const { res } = await seen();
    expect(res.headers['x-envoy-upstream-service-time']).toMatch(/^\d+$/);
  });
  it('x-envoy-upstream-service-time reflects a slow upstream', async () => {
    const { res } = await seen({ 'x-test-delay': '150' });
    expect(Number(res.headers['x-envoy-upstream-service-time'])).toBeGreaterThanOrEqual(140);
  });
  it('several Set-Cookie headers from the upstream stay separate headers', async () => {
    const { res } = await seen({ 'x-test-cookies': '3' });
    expect(res.headers['set-cookie']).toEqual(['c0=0; Path=/', 'c1=1; Path=/', 'c2=2; Path=/']);
  });
  it('upstream response headers are passed through', async () => {
    const { res } = await seen();
    expect(res.headers['x-upstream']).toBe('hdr');
    expect(res.headers['content-type']).toBe('application/json');
  });
});
