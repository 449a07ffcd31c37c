// Access logs as Istio configures Envoy's: off unless meshConfig.accessLogFile is set; Istio's
// default TEXT format with the response flags; JSON with Istio's keys as an option; the mesh config
// from a ConfigMap `istio` in the config folder, changeable at run time.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePorts, http, waitFor } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

let gw: GatewayProcess;
let port: number;
let app: Echo;
let deadPort: number;

function meshConfigMap(mesh: string): string {
  return `apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |
${mesh
  .split('\n')
  .map((l) => `    ${l}`)
  .join('\n')}
`;
}

const lines = (): string[] => gw.stdout().split('\n').filter((l) => l.startsWith('['));

beforeAll(async () => {
  app = await startEcho('app');
  [port, deadPort] = (await freePorts(2)) as [number, number];
  gw = await startGateway({
    files: {
      'config.yaml': yamlDocs(
        gateway('gw', port),
        ...service('app', { v1: app.port }),
        ...service('dead', { v1: deadPort }),
        virtualService('logs', ['logs.test'], [
          { match: [{ uri: { prefix: '/dead' } }], route: [dest('dead')] },
          { match: [{ uri: { prefix: '/abort' } }], fault: { abort: { httpStatus: 499, percentage: { value: 100 } } }, route: [dest('app')] },
          { name: 'to-app', route: [dest('app', 'v1')] },
        ]),
      ),
      'mesh.yaml': meshConfigMap('accessLogFile: /dev/stdout'),
    },
  });
});

afterAll(async () => {
  await gw?.stop();
  await app?.close();
});

describe('access log', () => {
  it("writes Istio's default TEXT format: method, path, code, flags, bytes, authority, upstream, cluster, route", async () => {
    await http(port, '/hello?x=1', { headers: { host: 'logs.test', 'user-agent': 'probe/1.0', 'x-request-id': 'req-123' } });
    const line = await waitFor(() => lines().find((l) => l.includes('req-123')));
    expect(line).toMatch(/^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] "GET \/hello\?x=1 HTTP\/1\.1" 200 - /);
    expect(line).toContain('"probe/1.0" "req-123" "logs.test"');
    expect(line).toContain(`"127.0.0.1:${app.port}" outbound|9080|v1|app.default.svc.cluster.local`);
    expect(line.trim().endsWith(' to-app')).toBe(true);
  });

  it('logs the response flags: NR, UF with URX after retries, FI', async () => {
    await http(port, '/', { headers: { host: 'unknown.test', 'x-request-id': 'nr-1' } });
    await http(port, '/dead', { headers: { host: 'logs.test', 'x-request-id': 'uf-1' } });
    await http(port, '/abort', { headers: { host: 'logs.test', 'x-request-id': 'fi-1' } });
    const nr = await waitFor(() => lines().find((l) => l.includes('"nr-1"')));
    const uf = await waitFor(() => lines().find((l) => l.includes('"uf-1"')));
    const fi = await waitFor(() => lines().find((l) => l.includes('"fi-1"')));
    expect(nr).toMatch(/" 404 NR /);
    expect(uf).toMatch(/" 503 UF,URX /);
    expect(fi).toMatch(/" 499 FI /);
  });

  it('switches to JSON with Istio keys when the mesh config changes at run time', async () => {
    gw.writeFile('mesh.yaml', meshConfigMap('accessLogFile: /dev/stdout\naccessLogEncoding: JSON'));
    const entry = await waitFor(
      async () => {
        await http(port, '/json', { headers: { host: 'logs.test', 'x-request-id': 'json-1' } });
        const l = gw
          .stdout()
          .split('\n')
          .find((x) => x.startsWith('{') && x.includes('"json-1"'));
        return l ? (JSON.parse(l) as Record<string, unknown>) : undefined;
      },
      5000,
      200,
    );
    expect(entry).toMatchObject({ method: 'GET', path: '/json', response_code: 200, response_flags: '-', request_id: 'json-1', authority: 'logs.test', route_name: 'to-app' });
    // Istio's whole default key set (EnvoyJSONLogFormatIstio), as the Telemetry API's envoy provider writes it.
    expect(Object.keys(entry!).sort()).toEqual(
      [
        'start_time', 'route_name', 'method', 'path', 'protocol', 'response_code', 'response_flags', 'response_code_details',
        'connection_termination_details', 'bytes_received', 'bytes_sent', 'duration', 'upstream_service_time', 'x_forwarded_for',
        'user_agent', 'request_id', 'authority', 'upstream_host', 'upstream_cluster', 'upstream_local_address',
        'downstream_local_address', 'downstream_remote_address', 'requested_server_name', 'upstream_transport_failure_reason',
      ].sort(),
    );
  });

  it('is off when accessLogFile is unset', async () => {
    gw.writeFile('mesh.yaml', meshConfigMap('accessLogEncoding: TEXT'));
    await new Promise((r) => setTimeout(r, 600));
    const before = gw.stdout().length;
    await http(port, '/quiet', { headers: { host: 'logs.test', 'x-request-id': 'quiet-1' } });
    await new Promise((r) => setTimeout(r, 200));
    expect(gw.stdout().slice(before)).not.toContain('quiet-1');
  });
});
