// The Gateway annotation `gatehouse.io/http1-engine` → the listener metadata the data plane reads
// (and replicas receive over xDS): one engine per port, the stricter one when Gateways disagree,
// and a warning for what cannot be honoured.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve } from '../../src/controlplane/resolve.js';

function resolveYaml(yaml: string): ReturnType<typeof resolve> {
  const { resources, problems } = parseYamlText(yaml, '/etc/gw/cfg.yaml');
  expect(problems).toEqual([]);
  return resolve(resources, { labels: {}, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG });
}

const gw = (name: string, port: number, annotations: Record<string, string> = {}, protocol = 'HTTP', extra = ''): string => `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ${name}
  namespace: default
  annotations: ${JSON.stringify(annotations)}
spec:
  servers:
  - port: {number: ${port}, name: p-${name}, protocol: ${protocol}}
    hosts: ["${name}.example.com"]${extra}
---`;

const SECRET = `
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: CERT, tls.key: KEY}
---`;
const SIMPLE = `
    tls: {mode: SIMPLE, credentialName: cert}`;

const engineOf = (s: ReturnType<typeof resolve>, port: number): unknown => s.listeners.find((l) => l.address.socket_address.port_value === port)!.metadata.filter_metadata.istio.http1_engine;
const messages = (s: ReturnType<typeof resolve>): string[] => s.warnings.map((w) => `${w.resource} ${w.path}: ${w.message}`);

describe('gatehouse.io/http1-engine', () => {
  it('strict or uws on a Gateway sets its HTTP port engine; without it the port has none (--http1-engine decides)', () => {
    const s = resolveYaml(gw('a', 8080, { 'gatehouse.io/http1-engine': 'strict' }) + gw('b', 8081, { 'gatehouse.io/http1-engine': 'uws' }) + gw('c', 8082));
    expect(engineOf(s, 8080)).toBe('strict');
    expect(engineOf(s, 8081)).toBe('uws');
    expect(engineOf(s, 8082)).toBeUndefined();
    expect(s.warnings).toEqual([]);
  });

  it('the value is read case-insensitively, spaces trimmed', () => {
    expect(engineOf(resolveYaml(gw('a', 8080, { 'gatehouse.io/http1-engine': ' Strict ' })), 8080)).toBe('strict');
  });

  it('HTTPS (SIMPLE) servers take it too', () => {
    const s = resolveYaml(SECRET + gw('a', 8443, { 'gatehouse.io/http1-engine': 'strict', 'gatehouse.io/alpn': 'http/1.1' }, 'HTTPS', SIMPLE));
    expect(engineOf(s, 8443)).toBe('strict');
  });

  it('two Gateways on one port that disagree: the strict engine serves it, and the uws one is warned at its annotation', () => {
    const s = resolveYaml(gw('a', 8080, { 'gatehouse.io/http1-engine': 'uws' }) + gw('b', 8080, { 'gatehouse.io/http1-engine': 'strict' }));
    expect(engineOf(s, 8080)).toBe('strict');
    expect(messages(s)).toEqual(['Gateway/default/a metadata.annotations.gatehouse.io/http1-engine: port 8080 is served by the strict HTTP/1.1 engine: Gateway/default/b asks for it on the same port (one engine serves a port; strict wins)']);
    expect(s.warnings[0]!.line).toBe(7); // the `annotations:` line of Gateway a
  });

  it('an unannotated Gateway beside an annotated one on the same port: the annotation decides', () => {
    expect(engineOf(resolveYaml(gw('a', 8080) + gw('b', 8080, { 'gatehouse.io/http1-engine': 'uws' })), 8080)).toBe('uws');
  });

  it('an unknown value is a warning and is ignored', () => {
    const s = resolveYaml(gw('a', 8080, { 'gatehouse.io/http1-engine': 'llhttp' }));
    expect(engineOf(s, 8080)).toBeUndefined();
    expect(messages(s)).toEqual(['Gateway/default/a metadata.annotations.gatehouse.io/http1-engine: gatehouse.io/http1-engine must be "uws" or "strict", not "llhttp"; ignored']);
  });

  it('uws where uWS cannot serve (an HTTPS port offering h2, a forward proxy) is warned: node:http serves it', () => {
    const h2 = resolveYaml(SECRET + gw('a', 8443, { 'gatehouse.io/http1-engine': 'uws' }, 'HTTPS', SIMPLE));
    expect(messages(h2)).toEqual(['Gateway/default/a metadata.annotations.gatehouse.io/http1-engine: port 8443 cannot be served by uWS: it offers h2 by ALPN; its HTTP/1.1 is served by the strict node:http engine']);
    const fp = resolveYaml(gw('a', 8080, { 'gatehouse.io/http1-engine': 'uws', 'gatehouse.io/forward-proxy': 'true' }));
    expect(messages(fp)).toEqual(['Gateway/default/a metadata.annotations.gatehouse.io/http1-engine: port 8080 cannot be served by uWS: it is a forward proxy (gatehouse.io/forward-proxy); its HTTP/1.1 is served by the strict node:http engine']);
    const narrowed = resolveYaml(SECRET + gw('a', 8443, { 'gatehouse.io/http1-engine': 'uws', 'gatehouse.io/alpn': 'http/1.1' }, 'HTTPS', SIMPLE));
    expect(narrowed.warnings).toEqual([]);
    expect(engineOf(narrowed, 8443)).toBe('uws');
  });

  it('TCP ports have no HTTP/1.1 engine', () => {
    const s = resolveYaml(gw('a', 9000, { 'gatehouse.io/http1-engine': 'strict' }, 'TCP'));
    expect(engineOf(s, 9000)).toBeUndefined();
  });
});
