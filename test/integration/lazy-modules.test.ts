// Modules a configuration does not use are not loaded (issue 18, memory): a gateway serving plain
// HTTP routes, with its xDS port open and a stored mesh root, loads neither grpc-js nor the Envoy
// protos (proto-loader, protobufjs), `ws`, undici, jose, the certificate builder (@peculiar/x509) nor the
// CEL interpreter (cel-js); the
// first xDS client loads grpc-js and the protos and is answered; a RequestAuthentication loads jose, a proxied
// WebSocket `ws`, an ISTIO_MUTUAL DestinationRule the certificate builder (the gateway's own
// workload certificate). Observed with a loader hook in the gateway process
// (test/helpers/module-trace.mjs), as `node --import` shows any user.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { ROOT, runCli, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort, http } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

const TRACE = join(ROOT, 'test', 'helpers', 'module-trace.mjs');
const dir = mkdtempSync(join(tmpdir(), 'gatehouse-modules-'));
/** The gateways' state dir, its mesh root made beforehand by `gatehouse ca root`. */
const stateDir = join(dir, 'state');
let n = 0;
let gw: GatewayProcess | null = null;
const echos: Echo[] = [];

beforeAll(async () => {
  const root = await runCli(['ca', 'root'], 15_000, { ...process.env, GATEHOUSE_STATE_DIR: stateDir });
  expect(root.code, root.stderr).toBe(0);
});
afterEach(async () => {
  await gw?.stop();
  gw = null;
});
afterAll(async () => {
  for (const e of echos) await e.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Starts a traced gateway on `docs`; returns it, its HTTP port and its trace file. */
async function traced(docs: (port: number, upstream: number) => Obj[], args: string[] = [], upstream?: number): Promise<{ port: number; trace: string }> {
  if (upstream === undefined) {
    const echo = await startEcho(`e${n}`);
    echos.push(echo);
    upstream = echo.port;
  }
  const port = await freePort();
  const trace = join(dir, `trace-${++n}.txt`);
  gw = await startGateway({ files: { 'c.yaml': yamlDocs(...docs(port, upstream)) }, nodeArgs: ['--import', TRACE], env: { GATEHOUSE_MODULE_TRACE: trace, GATEHOUSE_STATE_DIR: stateDir }, args });
  return { port, trace };
}

/** The packages (under node_modules) the stopped gateway had loaded. */
async function loadedPackages(trace: string): Promise<Set<string>> {
  await gw!.stop();
  gw = null;
  expect(existsSync(trace)).toBe(true);
  const pkgs = new Set<string>();
  for (const line of readFileSync(trace, 'utf8').split('\n')) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(line);
    if (m) pkgs.add(m[1]!);
  }
  return pkgs;
}

const plain = (port: number, upstream: number): Obj[] => [gateway('gw', port), ...service('app', { v1: upstream }), virtualService('app', ['*'], [{ route: [dest('app.default.svc.cluster.local', 'v1')] }])];

describe('modules load when the configuration needs them', () => {
  it('plain HTTP routes with the xDS port open: no Envoy protos, ws, undici, jose or certificate builder; the first xDS client loads the protos and is answered', async () => {
    const xdsPort = await freePort();
    const { port, trace } = await traced(plain, ['--xds-port', String(xdsPort)]);
    const r = await http(port, '/x', { headers: { host: 'app.test' } });
    expect(r.status).toBe(200);
    const before = new Set(readFileSync(trace, 'utf8').split('\n'));
    // The port listens from the start: proxy-status (an ADS client) is answered.
    const status = await runCli(['proxy-status', '--xds-address', `127.0.0.1:${xdsPort}`], 15_000);
    expect(status.code, status.stderr).toBe(0);
    const pkgs = await loadedPackages(trace);
    const at = (p: string): boolean => [...before].some((l) => l.includes(`node_modules/${p}/`));
    // grpc-js itself comes with the first connection to the xDS port.
    expect(at('@grpc/grpc-js')).toBe(false);
    expect(pkgs.has('@grpc/grpc-js')).toBe(true);
    for (const p of ['ws', 'undici', 'jose']) expect(pkgs.has(p), p).toBe(false);
    // The certificate builder neither, until the client's workload certificate (SDS) is issued.
    expect(at('@peculiar/x509')).toBe(false);
    // proto-loader comes with the first xDS message (CommonJS: in require.cache at exit), not before.
    expect(at('@grpc/proto-loader')).toBe(false);
    expect(pkgs.has('@grpc/proto-loader')).toBe(true);
    expect(pkgs.has('protobufjs')).toBe(true);
  });

  it('a gateway whose xDS client never comes loads neither grpc-js nor any proto', async () => {
    const { port, trace } = await traced(plain, ['--xds-port', String(await freePort())]);
    expect((await http(port, '/x', { headers: { host: 'app.test' } })).status).toBe(200);
    const pkgs = await loadedPackages(trace);
    for (const p of ['@grpc/grpc-js', '@grpc/proto-loader', 'protobufjs', 'ws', 'undici', 'jose', '@peculiar/x509', '@marcbachmann/cel-js']) expect(pkgs.has(p), p).toBe(false);
  });

  it('an ISTIO_MUTUAL DestinationRule loads the certificate builder (the gateway issues its workload certificate before applying it)', async () => {
    const { port, trace } = await traced((p, u) => [
      ...plain(p, u),
      { apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: 'mtls', namespace: 'default' }, spec: { host: 'other.default.svc.cluster.local', trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL' } } } },
      { apiVersion: 'networking.istio.io/v1', kind: 'ServiceEntry', metadata: { name: 'other', namespace: 'default' }, spec: { hosts: ['other.default.svc.cluster.local'], location: 'MESH_INTERNAL', ports: [{ number: 443, name: 'https', protocol: 'HTTP' }], resolution: 'STATIC', endpoints: [{ address: '127.0.0.1' }] } },
      virtualService('mtls', ['mtls.test'], [{ route: [dest('other.default.svc.cluster.local')] }]),
    ]);
    expect((await http(port, '/x', { headers: { host: 'app.test' } })).status).toBe(200);
    const pkgs = await loadedPackages(trace);
    expect(pkgs.has('@peculiar/x509')).toBe(true);
  });

  it('a proxied WebSocket loads ws; a RequestAuthentication loads jose', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise<void>((r) => wss.once('listening', () => r()));
    const wsPort = (wss.address() as { port: number }).port;
    const jwks = { keys: [{ kty: 'oct', k: 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYg', alg: 'HS256', kid: 'k1' }] };
    const { port, trace } = await traced((p, u) => [
      ...plain(p, u),
      { apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'jwt', namespace: 'istio-system' }, spec: { jwtRules: [{ issuer: 'https://issuer.test', jwks: JSON.stringify(jwks) }] } },
    ], [], wsPort);
    // A token of that issuer: its signature is checked (jose), whatever the outcome.
    const token = `${Buffer.from(JSON.stringify({ alg: 'HS256', kid: 'k1' })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: 'https://issuer.test' })).toString('base64url')}.AAAA`;
    const r = await http(port, '/x', { headers: { host: 'app.test', authorization: `Bearer ${token}` } });
    expect(r.status).toBe(401);
    await new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { host: 'app.test' } });
      ws.once('open', () => {
        ws.close();
        resolve();
      });
      ws.once('error', reject);
    });
    const pkgs = await loadedPackages(trace);
    await new Promise<void>((r) => wss.close(() => r()));
    expect(pkgs.has('jose')).toBe(true);
    expect(pkgs.has('ws')).toBe(true);
  });
});
