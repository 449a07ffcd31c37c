// A Zipkin collector stand-in for BENCH_TRACING runs: accepts `POST /api/v2/spans` (JSON v2) in
// the bench process and counts the spans, so that the gateway's export path runs for real.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface TraceReceiver {
  port: number;
  spans: number;
  close(): Promise<void>;
}

export async function startTraceReceiver(): Promise<TraceReceiver> {
  const r: TraceReceiver = { port: 0, spans: 0, close: async () => undefined };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        r.spans += (JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown[]).length;
      } catch {
        // counted as nothing
      }
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  r.port = (server.address() as AddressInfo).port;
  r.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  server.unref();
  return r;
}

/** The mesh config and Telemetry that send `percent`% of requests' spans to the receiver. */
export function tracingYaml(percent: number, port: number): string {
  return `---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    extensionProviders:
    - name: zipkin
      zipkin: {service: 127.0.0.1, port: ${port}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: ${percent}
`;
}
