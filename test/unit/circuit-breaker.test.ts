import { describe, expect, it } from 'vitest';
import { ADMITTED, CircuitBreaker, OVERFLOW, PENDING } from '../../src/upstream/circuit-breaker.js';
import { RequestHasher, cookie, setCookieValue } from '../../src/upstream/hash-key.js';

const limits = (max_connections: number, max_pending_requests: number, max_requests = 4294967295, max_retries = 4294967295) => ({ max_connections, max_pending_requests, max_requests, max_retries });

describe('circuit breaker (Istio connectionPool)', () => {
  it('maxConnections=1 + http1MaxPendingRequests=1: one in flight, one waiting, the third overflows (UO)', () => {
    const b = new CircuitBreaker();
    b.configure(limits(1, 1));
    expect(b.admit(0)).toBe(ADMITTED);
    expect(b.admit(1)).toBe(PENDING);
    expect(b.admit(2)).toBe(OVERFLOW);
    expect(b.pendingOverflow).toBe(1);
    // The waiting request gets the connection: room for another waiter.
    b.connected();
    b.release(false, false);
    expect(b.admit(1)).toBe(PENDING);
    expect(b.active).toBe(2);
  });

  it('every endpoint may use its own connections before requests wait', () => {
    const b = new CircuitBreaker();
    b.configure(limits(1, 1));
    expect(b.admit(0)).toBe(ADMITTED); // endpoint A
    expect(b.admit(0)).toBe(ADMITTED); // endpoint B
    expect(b.admit(1)).toBe(PENDING); // A again
    expect(b.admit(1)).toBe(OVERFLOW); // B again: the one pending slot is taken
  });

  it('http2MaxRequests caps requests in flight, whatever the connections', () => {
    const b = new CircuitBreaker();
    b.configure(limits(4294967295, 4294967295, 2));
    expect(b.admit(0)).toBe(ADMITTED);
    expect(b.admit(5)).toBe(ADMITTED);
    expect(b.admit(0)).toBe(OVERFLOW);
    expect(b.requestOverflow).toBe(1);
    b.release(false, false);
    expect(b.admit(0)).toBe(ADMITTED);
  });

  it('maxRetries caps retries scheduled or in flight; a failed retry frees its own place before the check', () => {
    const b = new CircuitBreaker();
    b.configure(limits(4294967295, 4294967295, 4294967295, 1));
    const req = { sink: { closed: false } };
    expect(b.retryAllowed(false)).toBe(true);
    b.retryScheduled(req);
    expect(b.retries).toBe(1);
    expect(b.retryAllowed(false)).toBe(false); // another request's retry: overflow
    expect(b.retryOverflow).toBe(1);
    expect(b.takeRetry(req)).toBe(true); // the retry starts: its attempt holds the count
    expect(b.takeRetry(req)).toBe(false);
    expect(b.retryAllowed(true)).toBe(true); // this retry failing and retrying again
    b.release(false, true);
    expect(b.retries).toBe(0);
  });

  it('forgets a scheduled retry whose request ended during the backoff', () => {
    const b = new CircuitBreaker();
    b.configure(limits(4294967295, 4294967295, 4294967295, 1));
    const gone = { sink: { closed: false } };
    b.retryScheduled(gone);
    gone.sink.closed = true; // e.g. the route timeout answered 504 meanwhile
    expect(b.retryAllowed(false)).toBe(true);
    expect(b.retries).toBe(0);
  });

  it('unlimited by default (Istio sets 2^32-1)', () => {
    const b = new CircuitBreaker();
    b.configure(undefined);
    for (let i = 0; i < 1000; i++) expect(b.admit(i)).toBe(ADMITTED);
  });
});

describe('consistent-hash keys', () => {
  const req = (headers: string[], query = '') => ({ headers, query });

  it('hashes a header, a query parameter, the client address; no key means no hash', () => {
    const h = new RequestHasher([{ header: { header_name: 'x-user' } }]);
    expect(h.hash(req(['x-user', 'alice']), '1.2.3.4', [])).toBe(true);
    const alice = [h.hi, h.lo];
    h.hash(req(['x-user', 'alice', 'other', 'x']), '5.6.7.8', []);
    expect([h.hi, h.lo]).toEqual(alice);
    h.hash(req(['x-user', 'bob']), '1.2.3.4', []);
    expect([h.hi, h.lo]).not.toEqual(alice);
    expect(h.hash(req([]), '1.2.3.4', [])).toBe(false);

    const q = new RequestHasher([{ query_parameter: { name: 'user' } }]);
    expect(q.hash(req([], 'a=1&user=alice&b=2'), '', [])).toBe(true);
    expect([q.hi, q.lo]).toEqual(alice);
    expect(q.hash(req([], 'username=alice'), '', [])).toBe(false);

    const ip = new RequestHasher([{ connection_properties: { source_ip: true } }]);
    expect(ip.hash(req([]), '10.1.2.3', [])).toBe(true);
  });

  it('reads cookies as Envoy does (quotes stripped), and generates one when missing and a ttl is set', () => {
    expect(cookie(['cookie', 'a=1; session="abc"; b=2'], 'session')).toBe('abc');
    expect(cookie(['cookie', 'sessionx=1', 'cookie', 'session=z'], 'session')).toBe('z');
    const h = new RequestHasher([{ cookie: { name: 'session', path: '/', ttl: { seconds: 60, nanos: 0 } } }]);
    expect(h.hash(req([]), '10.0.0.1', ['x-request-id', 'r-1'])).toBe(true);
    expect(h.setCookie).toMatch(/^session="[0-9a-f]{16}"; Max-Age=60; Path=\/; HttpOnly$/);
    const value = /"(.*)"/.exec(h.setCookie!)![1]!;
    const generated = [h.hi, h.lo];
    // The same request (a retry) generates the same value; the client sending it back hashes the same.
    h.hash(req([]), '10.0.0.1', ['x-request-id', 'r-1']);
    expect([h.hi, h.lo]).toEqual(generated);
    expect(h.hash(req(['cookie', `session=${value}`]), '10.9.9.9', [])).toBe(true);
    expect(h.setCookie).toBeNull();
    expect([h.hi, h.lo]).toEqual(generated);
    // Without a ttl nothing is generated.
    expect(new RequestHasher([{ cookie: { name: 'session' } }]).hash(req([]), '10.0.0.1', [])).toBe(false);
    expect(setCookieValue('s', 'v', '', 0)).toBe('s="v"; HttpOnly');
  });
});
