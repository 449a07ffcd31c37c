// The request lifecycle in process, without sockets: a fake sink (the client) and a fake pool (the
// upstream, answered by hand) around a real Exchange, so the filter chain, the retry state and the
// router are exercised alone, fast. End-to-end behaviour per engine is in
// test/integration/engine-matrix.test.ts.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HTTP_FILTERS, type FilterChain } from '../../src/ingress/filters/chain.js';
import { CONTINUE, respond, type FilterRequest, type HttpFilter } from '../../src/ingress/filters/filter.js';
import { RetryState } from '../../src/ingress/retry-state.js';
import { compileRetry, headerOps, type CompiledCors } from '../../src/routing/route-table.js';
import { CircuitBreaker } from '../../src/upstream/circuit-breaker.js';
import { FakeUpstream, fakeCluster, fakeContext, head, route, start } from '../helpers/fake-lifecycle.js';

afterEach(() => {
  vi.restoreAllMocks();
});

const cors: CompiledCors = {
  allows: (o) => o === 'https://shop.example',
  forwardNotMatchingPreflights: true,
  preflight: ['access-control-allow-methods', 'GET,POST'],
  actual: ['access-control-expose-headers', 'x-trace'],
};

describe('filter chain', () => {
  it('a filter registered in the chain takes its place: a local rate limit answers 429 RL, a tracing filter tags every response', async () => {
    // What a future filter file looks like: one object, one line in the chain.
    let tokens = 2;
    const localRateLimit: HttpFilter = {
      name: 'envoy.filters.http.local_ratelimit',
      decode: () => (tokens-- > 0 ? CONTINUE : respond(429, 'RL', 'local_rate_limited')),
    };
    const tracing: HttpFilter = {
      name: 'test.tracing',
      decode(req: FilterRequest) {
        req.addResponseOps(headerOps([['x-test-span', 'span-1']], [], []));
        return CONTINUE;
      },
    };
    const chain: FilterChain = [tracing, ...HTTP_FILTERS, localRateLimit];
    const up = new FakeUpstream();
    const { ctx, recorded } = fakeContext([fakeCluster(up, ['10.0.0.1:80'])], { filters: chain });

    const first = start(ctx, route());
    (await up.request(0)).answer(200, {}, 'ok');
    await first.done;
    expect(first.status).toBe(200);
    expect(first.headers['x-test-span']).toBe('span-1');

    const second = start(ctx, route());
    (await up.request(1)).answer(200, {}, 'ok');
    await second.done;

    const limited = start(ctx, route());
    await limited.done;
    expect(limited.status).toBe(429);
    expect(limited.text).toBe('local_rate_limited');
    expect(limited.headers['x-test-span']).toBe('span-1');
    expect(up.dispatched.length).toBe(2);
    expect(recorded.map((r) => `${r.code} ${r.flags}`)).toEqual(['200 ', '200 ', '429 RL']);

    // No route: the router answers 404 NR, after every filter.
    tokens = 1;
    const none = start(ctx, undefined);
    await none.done;
    expect(none.status).toBe(404);
    expect(none.headers['x-test-span']).toBe('span-1');
  });

  it('synchronous filters do not defer the request: it is dispatched before begin() returns', () => {
    const up = new FakeUpstream();
    const { ctx } = fakeContext([fakeCluster(up, ['10.0.0.1:80'])]);
    start(ctx, route({ cors }), head('GET', '/', ['origin', 'https://shop.example']));
    expect(up.dispatched.length).toBe(1);
  });

  it("Istio's order: CORS answers a preflight before the fault filter aborts; an aborted actual request keeps its CORS headers", async () => {
    const up = new FakeUpstream();
    const { ctx, recorded } = fakeContext([fakeCluster(up, ['10.0.0.1:80'])]);
    const r = route({ cors, fault: { abortStatus: 418, abortPerMillion: 1_000_000 } });
    const pre = start(ctx, r, head('OPTIONS', '/', ['origin', 'https://shop.example', 'access-control-request-method', 'POST']));
    await pre.done;
    expect(pre.status).toBe(200);
    expect(pre.headers['access-control-allow-origin']).toBe('https://shop.example');
    expect(pre.headers['access-control-allow-methods']).toBe('GET,POST');

    const actual = start(ctx, r, head('GET', '/', ['origin', 'https://shop.example']));
    await actual.done;
    expect(actual.status).toBe(418);
    expect(actual.text).toBe('fault filter abort');
    expect(actual.headers['access-control-allow-origin']).toBe('https://shop.example');
    expect(actual.headers['access-control-expose-headers']).toBe('x-trace');
    expect(up.dispatched.length).toBe(0);
    expect(recorded.map((x) => x.flags)).toEqual(['', 'FI']);
  });

  it('a fault delay holds the request, then its abort is decided: DI,FI', async () => {
    const up = new FakeUpstream();
    const { ctx, recorded } = fakeContext([fakeCluster(up, ['10.0.0.1:80'])]);
    const sink = start(ctx, route({ fault: { delayMs: 5, delayPerMillion: 1_000_000, abortStatus: 503, abortPerMillion: 1_000_000 } }));
    expect(sink.status).toBe(0);
    await sink.done;
    expect(sink.status).toBe(503);
    expect(recorded).toEqual([{ code: 503, flags: 'DI,FI' }]);
  });

  it('a fault delay without abort forwards the request after the delay', async () => {
    const up = new FakeUpstream();
    const { ctx, recorded } = fakeContext([fakeCluster(up, ['10.0.0.1:80'])]);
    const sink = start(ctx, route({ fault: { delayMs: 5, delayPerMillion: 1_000_000 } }));
    expect(up.dispatched.length).toBe(0);
    (await up.request(0)).answer(200, {}, 'late');
    await sink.done;
    expect(sink.text).toBe('late');
    expect(recorded).toEqual([{ code: 200, flags: 'DI' }]);
  });
});

describe('router and retry state', () => {
  it('a connect failure is retried on another host (previous_hosts) with x-envoy-attempt-count 2; the retry answers', async () => {
    const up = new FakeUpstream();
    const { ctx, recorded } = fakeContext([fakeCluster(up, ['10.0.0.1:80', '10.0.0.2:80'])]);
    const sink = start(ctx, route());
    const a = await up.request(0);
    expect(a.header('x-envoy-attempt-count')).toBe('1');
    a.fail('connect', 'ECONNREFUSED');
    const b = await up.request(1);
    expect(b.endpoint).not.toBe(a.endpoint);
    expect(b.header('x-envoy-attempt-count')).toBe('2');
    b.answer(200, { 'x-from': 'b' }, 'hello');
    await sink.done;
    expect(sink.status).toBe(200);
    expect(sink.headers['x-from']).toBe('b');
    expect(sink.text).toBe('hello');
    expect(recorded).toEqual([{ code: 200, flags: '' }]);
  });

  it('attempts used up: 503 UF,URX with the connect-failure body', async () => {
    const up = new FakeUpstream();
    const { ctx, recorded } = fakeContext([fakeCluster(up, ['10.0.0.1:80'])]);
    const sink = start(ctx, route({ attempts: 2 }));
    for (let i = 0; i < 3; i++) (await up.request(i)).fail('connect', 'ECONNREFUSED');
    await sink.done;
    expect(up.dispatched.length).toBe(3);
    expect(sink.status).toBe(503);
    expect(sink.text).toBe('upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: ECONNREFUSED');
    expect(recorded).toEqual([{ code: 503, flags: 'UF,URX' }]);
  });

  it('a refused stream is retried under the default policy; a reset is not (503 UC)', async () => {
    const up = new FakeUpstream();
    const { ctx, recorded } = fakeContext([fakeCluster(up, ['10.0.0.1:80'])]);
    const refused = start(ctx, route());
    (await up.request(0)).fail('refused-stream');
    (await up.request(1)).answer(200);
    await refused.done;
    expect(refused.status).toBe(200);

    const reset = start(ctx, route());
    (await up.request(2)).fail('reset', 'ECONNRESET');
    await reset.done;
    expect(reset.status).toBe(503);
    expect(reset.text).toMatch(/reset reason: connection termination$/);
    expect(up.dispatched.length).toBe(3);
    expect(recorded.map((r) => `${r.code} ${r.flags}`)).toEqual(['200 ', '503 UC']);
  });

  it('an invalid response is 502 UPE; under retryOn reset it is retried', async () => {
    const up = new FakeUpstream();
    const { ctx, recorded } = fakeContext([fakeCluster(up, ['10.0.0.1:80'])]);
    const plain = start(ctx, route());
    (await up.request(0)).fail('protocol', 'HPE_INVALID_CHUNK_SIZE');
    await plain.done;
    expect(plain.status).toBe(502);
    expect(plain.text).toMatch(/reset reason: protocol error$/);

    const retried = start(ctx, route({ retryOn: 'reset', attempts: 1 }));
    (await up.request(1)).fail('protocol', 'HPE_INVALID_CHUNK_SIZE');
    (await up.request(2)).fail('protocol', 'HPE_INVALID_CHUNK_SIZE');
    await retried.done;
    expect(recorded.map((r) => `${r.code} ${r.flags}`)).toEqual(['502 UPE', '502 UPE,URX']);
  });

  it('a retriable status (503) is retried until the attempts are used up, then relayed', async () => {
    const up = new FakeUpstream();
    const { ctx } = fakeContext([fakeCluster(up, ['10.0.0.1:80', '10.0.0.2:80'])]);
    const sink = start(ctx, route({ attempts: 2 }));
    for (let i = 0; i < 3; i++) (await up.request(i)).answer(503, {}, `busy ${i}`);
    await sink.done;
    expect(sink.status).toBe(503);
    expect(sink.text).toBe('busy 2');
  });

  it('gRPC: a trailers-only UNAVAILABLE is retried (retryOn unavailable)', async () => {
    const up = new FakeUpstream();
    const { ctx } = fakeContext([fakeCluster(up, ['10.0.0.1:80'])]);
    const sink = start(ctx, route(), head('POST', '/pkg.Svc/Call', ['content-type', 'application/grpc']));
    (await up.request(0)).answer(200, { 'content-type': 'application/grpc', 'grpc-status': '14' });
    (await up.request(1)).answer(200, { 'content-type': 'application/grpc', 'grpc-status': '0' });
    await sink.done;
    expect(sink.headers['grpc-status']).toBe('0');
  });

  it("the cluster's retry budget (max_retries 0) stops a retry: the failure stands", async () => {
    const up = new FakeUpstream();
    const { ctx, recorded } = fakeContext([fakeCluster(up, ['10.0.0.1:80'], { maxRetries: 0 })]);
    const sink = start(ctx, route());
    (await up.request(0)).fail('connect-timeout', 'UND_ERR_CONNECT_TIMEOUT');
    await sink.done;
    expect(up.dispatched.length).toBe(1);
    expect(sink.text).toMatch(/transport failure reason: connection timeout$/);
    expect(recorded).toEqual([{ code: 503, flags: 'UF' }]);
  });

  it('a per-try timeout the policy does not retry answers 504 UT', async () => {
    const up = new FakeUpstream();
    const { ctx, recorded } = fakeContext([fakeCluster(up, ['10.0.0.1:80'])]);
    const sink = start(ctx, route({ perTryTimeoutMs: 5 }));
    await up.request(0); // never answered
    await sink.done;
    expect(sink.status).toBe(504);
    expect(sink.text).toBe('upstream request timeout');
    expect(recorded).toEqual([{ code: 504, flags: 'UT' }]);
  });

  it("back-off is Envoy's jittered exponential: below 25, 50, 100, 200 ms, then at most 250 ms (10x the base)", () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.99999);
    const s = new RetryState(compileRetry('5xx', 10, 0, [], false), new CircuitBreaker());
    expect(Array.from({ length: 7 }, () => s.nextBackOffMs())).toEqual([24, 49, 99, 199, 249, 249, 249]);
  });

  it('retry conditions by failure kind follow retryOn', () => {
    const breaker = new CircuitBreaker();
    const istioDefault = new RetryState(compileRetry('connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes', 2, 0, [503], true), breaker);
    expect(['connect', 'connect-timeout', 'tls', 'refused-stream', 'reset', 'protocol', 'overflow'].map((k) => istioDefault.retriesError(k as never))).toEqual([true, true, true, true, false, false, false]);
    expect([istioDefault.retriesStatus(503, -1), istioDefault.retriesStatus(502, -1), istioDefault.retriesStatus(200, 14)]).toEqual([true, false, true]);
    const fiveXX = new RetryState(compileRetry('5xx', 2, 0, [], false), breaker);
    expect([fiveXX.retriesError('reset'), fiveXX.retriesError('body-timeout'), fiveXX.retriesStatus(500, -1), fiveXX.retriesPerTryTimeout()]).toEqual([true, true, true, true]);
    const none = new RetryState(null, breaker);
    expect([none.retriesError('connect'), none.retriesStatus(503, -1)]).toEqual([false, false]);
  });
});
