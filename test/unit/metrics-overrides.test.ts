// Istio's metric overrides (Telemetry API, applied by src/telemetry/metrics.ts) on the Prometheus
// text the admin port serves: tags removed, tags set by CEL from what the handle key fixes and,
// when the caller passes them, from the request's own attributes; label sets resolved once per
// distinct value; the standard series untouched by another version's view.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { AttributeSource } from '../../src/config/cel.js';
import { IstioMetrics } from '../../src/telemetry/metrics.js';
import { findSamples, parsePrometheus } from '../helpers/metrics.js';

const dest = { service: { host: 'app.default.svc.cluster.local', name: 'app', namespace: 'default' }, endpoint: { workload: 'app-v1', namespace: 'default', labels: { app: 'app', version: 'v1' } } };
const host = (h: string): AttributeSource => ({ attribute: (root, field) => (root === 'request' && field === 'host' ? h : undefined) });
const observation = { durationMs: 3, requestBytes: 10, responseBytes: 20 };

describe('metric overrides', () => {
  it('a tag reading a request attribute takes each request\'s value when the request is passed; the standard view keeps Istio\'s labels', async () => {
    const base = new IstioMetrics({ labels: { app: 'edge' }, namespace: 'gw' }, new Registry(), { defaultMetrics: false });
    const view = base.withOverrides({
      disabled: false,
      metrics: [{ name: 'requests_total', drop: false, tags_to_remove: ['destination_version', 'source_principal'], dimensions: { request_host: 'request.host', 'code-class': "string(response.code / 100) + 'xx'" } }],
    });
    const key = {};
    view.handle(key, dest, 'http', 200, '', '', host('a.example')).record(observation);
    view.handle(key, dest, 'http', 200, '', '', host('a.example')).record(observation);
    view.handle(key, dest, 'http', 503, 'UF', '', host('b.example')).record(observation);
    base.handle(key, dest, 'http', 200, '').record(observation);
    const samples = parsePrometheus(await base.registry.metrics());
    const a = findSamples(samples, 'istio_requests_total', { request_host: 'a.example' });
    expect(a.map((s) => [s.value, s.labels['code_class'], s.labels['destination_version'], s.labels['source_principal']])).toEqual([[2, '2xx', undefined, undefined]]);
    expect(findSamples(samples, 'istio_requests_total', { request_host: 'b.example', code_class: '5xx', response_flags: 'UF' }).map((s) => s.value)).toEqual([1]);
    // The unchanged view's series: Istio's standard labels, no override.
    const standard = findSamples(samples, 'istio_requests_total', { destination_version: 'v1' });
    expect(standard.map((s) => [s.value, s.labels['request_host']])).toEqual([[1, undefined]]);
    // Histograms of the view keep the standard labels (the override names requests_total only).
    expect(findSamples(samples, 'istio_request_duration_milliseconds_count', { destination_version: 'v1' }).map((s) => [s.labels['response_code'], s.value])).toEqual([
      ['200', 3],
      ['503', 1],
    ]);
  });

  it('a dropped metric records nothing; TCP metrics take their overrides too', async () => {
    const base = new IstioMetrics({ labels: {}, namespace: 'gw' }, new Registry(), { defaultMetrics: false });
    const view = base.withOverrides({
      disabled: false,
      metrics: [
        { name: 'response_bytes', drop: true, tags_to_remove: [], dimensions: {} },
        { name: 'tcp_sent_bytes_total', drop: false, tags_to_remove: ['response_flags'], dimensions: { tier: "'edge'" } },
      ],
    });
    view.handle({}, dest, 'http', 200, '').record(observation);
    const tcp = view.tcpHandle({}, dest, '-');
    tcp.opened();
    tcp.sent(100);
    const samples = parsePrometheus(await base.registry.metrics());
    expect(findSamples(samples, 'istio_response_bytes_count')).toEqual([]);
    expect(findSamples(samples, 'istio_request_bytes_count').length).toBe(1);
    expect(findSamples(samples, 'istio_tcp_sent_bytes_total').map((s) => [s.value, s.labels['tier'], s.labels['response_flags']])).toEqual([[100, 'edge', undefined]]);
    expect(findSamples(samples, 'istio_tcp_connections_opened_total').map((s) => s.labels['response_flags'])).toEqual(['-']);
  });
});
