// The edge limits of the node:http2 engine ports and their GATEHOUSE_* overrides.
import { describe, expect, it } from 'vitest';
import { DEFAULT_EDGE_LIMITS, edgeLimitsFromEnv } from '../../src/ingress/edge-limits.js';

describe('edge limits', () => {
  it('defaults: handshake 10 s, request headers 30 s, idle 75 s, stream idle 5 min, PING answer 10 s, 100 HTTP/2 streams', () => {
    expect(edgeLimitsFromEnv({})).toEqual({
      handshakeTimeoutMs: 10_000,
      requestHeadersTimeoutMs: 30_000,
      idleTimeoutMs: 75_000,
      streamIdleTimeoutMs: 300_000,
      pingTimeoutMs: 10_000,
      h2MaxConcurrentStreams: 100,
    });
    expect(edgeLimitsFromEnv({ GATEHOUSE_IDLE_TIMEOUT: '' })).toEqual(DEFAULT_EDGE_LIMITS);
  });

  it('each limit is overridden by its variable (durations as Istio writes them)', () => {
    expect(
      edgeLimitsFromEnv({
        GATEHOUSE_HANDSHAKE_TIMEOUT: '2s',
        GATEHOUSE_REQUEST_HEADERS_TIMEOUT: '1m',
        GATEHOUSE_IDLE_TIMEOUT: '1h',
        GATEHOUSE_STREAM_IDLE_TIMEOUT: '1.5s',
        GATEHOUSE_H2_PING_TIMEOUT: '500ms',
        GATEHOUSE_H2_MAX_CONCURRENT_STREAMS: '250',
      }),
    ).toEqual({ handshakeTimeoutMs: 2000, requestHeadersTimeoutMs: 60_000, idleTimeoutMs: 3_600_000, streamIdleTimeoutMs: 1500, pingTimeoutMs: 500, h2MaxConcurrentStreams: 250 });
  });

  it.each([
    ['GATEHOUSE_IDLE_TIMEOUT', 'soon', /GATEHOUSE_IDLE_TIMEOUT="soon" must be a duration/],
    ['GATEHOUSE_IDLE_TIMEOUT', '30', /must be a duration such as 30s/],
    ['GATEHOUSE_HANDSHAKE_TIMEOUT', '0s', /at least 1ms/],
    ['GATEHOUSE_STREAM_IDLE_TIMEOUT', '100d', /must be a duration/],
    ['GATEHOUSE_STREAM_IDLE_TIMEOUT', '1000h', /at most 24 days/],
    ['GATEHOUSE_H2_MAX_CONCURRENT_STREAMS', '0', /whole number of streams, at least 1/],
    ['GATEHOUSE_H2_MAX_CONCURRENT_STREAMS', '1.5', /whole number/],
  ])('%s=%s is refused with a message', (name, value, message) => {
    expect(() => edgeLimitsFromEnv({ [name]: value })).toThrow(message);
  });
});
