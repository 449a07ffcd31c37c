// Target `gateway`: `node dist/cli.js run` on a config written to the run's temp folder: a Gateway
// with an HTTP port (uWS) and, for https, an HTTPS port (SIMPLE, kept on the uWS TLS path); a
// Gateway on the strict HTTP/1.1 engine; a gRPC (h2c) Gateway; the VirtualServices and
// ServiceEntries to the upstream; with routes1k, 1,000 more VirtualServices.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO } from '../common.js';
import { localServiceEntry, policyGatewayYaml, ROUTES_COUNT, routesYaml } from '../configs.js';
import { freePorts, waitReady } from '../net.js';
import { track } from '../proc.js';
import type { CertPaths, Settings, Target } from '../types.js';
import type { Upstream } from '../upstream.js';
import { tracingYaml } from '../trace-receiver.js';
import { GRPC_HOST, HOST } from '../wire.js';

export interface GatewayPorts {
  http: number;
  strict: number; // HTTP on the strict HTTP/1.1 engine
  https?: number; // with cert
  h2?: number; // with cert: HTTPS offering h2 (node:http2), the default ALPN
  grpc: number;
}

export function gatewayConfig(ports: GatewayPorts, up: Upstream, cert: CertPaths | undefined): string {
  const httpsServer =
    ports.https !== undefined && cert
      ? `
    - port: { number: ${ports.https}, protocol: HTTPS, name: https }
      hosts: ['*']
      tls: { mode: SIMPLE, serverCertificate: ${JSON.stringify(cert.cert)}, privateKey: ${JSON.stringify(cert.key)} }`
      : '';
  const h2Gateway =
    ports.h2 !== undefined && cert
      ? `---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-h2-gateway
  namespace: bench
spec:
  selector: {}
  servers:
    - port: { number: ${ports.h2}, protocol: HTTPS, name: https-h2 }
      hosts: ['*']
      tls: { mode: SIMPLE, serverCertificate: ${JSON.stringify(cert.cert)}, privateKey: ${JSON.stringify(cert.key)} }
`
      : '';
  // HTTPS offers h2 by default (node:http2); `gatehouse.io/alpn: http/1.1` keeps the https
  // scenario on the uWS TLS path it has always measured (README: what h2 by default costs).
  return `# written by bench/run.ts (bench/lib/targets/gateway.ts)
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-gateway
  namespace: bench
  annotations: { gatehouse.io/alpn: "http/1.1" }
spec:
  selector: {}
  servers:
    - port: { number: ${ports.http}, protocol: HTTP, name: http }
      hosts: ['*']${httpsServer}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-gateway-strict
  namespace: bench
  annotations: { gatehouse.io/http1-engine: strict }
spec:
  selector: {}
  servers:
    - port: { number: ${ports.strict}, protocol: HTTP, name: http-strict }
      hosts: ['*']
${h2Gateway}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-grpc-gateway
  namespace: bench
spec:
  selector: {}
  servers:
    - port: { number: ${ports.grpc}, protocol: GRPC, name: grpc }
      hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench-grpc
  namespace: bench
spec:
  hosts: ['${GRPC_HOST}']
  gateways: [bench-grpc-gateway]
  http:
    - route:
        - destination:
            host: grpc-upstream.bench.svc.cluster.local
            port: { number: 50051 }
---
${localServiceEntry('grpc-upstream', 50051, 'GRPC', up.grpcPort)}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench
  namespace: bench
spec:
  hosts: ['${HOST}']
  gateways: [bench-gateway, bench-gateway-strict${ports.h2 !== undefined && cert ? ', bench-h2-gateway' : ''}]
  http:
    - route:
        - destination:
            host: upstream.bench.svc.cluster.local
            port: { number: 80 }
---
${localServiceEntry('upstream', 80, 'HTTP', up.port)}${policyGatewayYaml(up.port, ['bench-gateway', 'bench-gateway-strict'])}`;
}

/** Replaces the gateway's config file in one rename (the watcher ignores dot files). */
export function writeGatewayConfig(configDir: string, text: string): void {
  const tmpFile = path.join(configDir, '.bench.yaml.tmp');
  fs.writeFileSync(tmpFile, text);
  fs.renameSync(tmpFile, path.join(configDir, 'bench.yaml'));
}

export async function startGateway(s: Settings, tmp: string, up: Upstream, cert: CertPaths | undefined, name = 'gateway', extraRoutes?: number): Promise<Target> {
  if (!fs.existsSync(s.gatewayCli)) {
    throw new Error(`${path.relative(REPO, s.gatewayCli)} not found: run \`npm run build\` (npm run bench does), or drop gateway from BENCH_TARGETS`);
  }
  const [port, adminPort, tlsPort, grpcPort, strictPort, h2Port] = (await freePorts(6)) as [number, number, number, number, number, number];
  const ports: GatewayPorts = { http: port, strict: strictPort, grpc: grpcPort, ...(cert ? { https: tlsPort, h2: h2Port } : {}) };
  const configDir = path.join(tmp, `${name}-config`);
  fs.mkdirSync(configDir);
  const base = gatewayConfig(ports, up, cert) + (s.tracing ? tracingYaml(s.tracing.percent, s.tracing.port) : '');
  const configText = base + routesYaml(extraRoutes ?? (s.scenarios.some((sc) => sc.id === 'routes1k') ? ROUTES_COUNT : 0));
  fs.writeFileSync(path.join(configDir, 'bench.yaml'), configText);
  const logFile = path.join(tmp, `${name}.log`);
  const log = fs.openSync(logFile, 'a');
  const args = [
    ...s.gatewayNodeArgs,
    s.gatewayCli,
    'run',
    '--config', configDir,
    '--bind', '127.0.0.1',
    '--admin-port', String(adminPort),
    '--admin-bind', '127.0.0.1',
    '--xds-port', '0',
    '--workers', String(s.workers),
    ...s.gatewayArgs,
  ];
  const proc = spawn(process.execPath, args, { cwd: REPO, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const child = track(name, proc, logFile);
  await waitReady(child, adminPort, '/healthz/ready', '127.0.0.1', s.readyTimeoutMs);
  return { name: 'gateway', port, strictPort, grpcPort, ...(ports.https !== undefined ? { tlsPort: ports.https } : {}), ...(ports.h2 !== undefined ? { h2Port: ports.h2 } : {}), child, config: { dir: configDir, base, text: configText } };
}
