// ACME end to end against Debian's pebble (installed by .ci/run): a Gateway annotated with
// `gatehouse.io/acme-directory` serves a self-signed placeholder, answers pebble's HTTP-01
// challenge on its own HTTP listener, then serves the issued certificate (verified against
// pebble's root); account key and certificate are kept in GATEHOUSE_STATE_DIR and reused by the
// next process; a directory that cannot be reached keeps the placeholder and is retried, logged
// and counted.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type ConnectionOptions, type PeerCertificate } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePorts, sleep, waitFor } from '../helpers/net.js';
import { fetchText } from '../helpers/pebble.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { service, yamlDocs, type Obj } from '../helpers/yaml.js';

let work: string;
let stateDir: string;
let pebble: ChildProcess | undefined;
let pebbleLog = '';
let echo: Echo;
let gw: GatewayProcess | undefined;
let P: { dir: number; mgmt: number; tls01: number; http: number; https: number; https2: number; dead: number };
let pebbleCert = '';

function handshake(port: number, servername: string, opts: ConnectionOptions = {}): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false, ...opts }, () => {
      const c = s.getPeerCertificate();
      s.end();
      resolve(c);
    });
    s.on('error', reject);
    s.setTimeout(3000, () => s.destroy(new Error('handshake timed out')));
  });
}

const field = (x: unknown, k: string): string | undefined => (x as Record<string, string> | undefined)?.[k];

function config(): string {
  const gateway = (name: string, directory: string, servers: Obj[]): Obj => ({
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: {
      name,
      namespace: 'default',
      annotations: { 'gatehouse.io/acme-directory': directory, 'gatehouse.io/acme-email': 'ops@example.com', 'gatehouse.io/acme-ca-file': 'pebble.crt' },
    },
    spec: { selector: { istio: 'ingressgateway' }, servers },
  });
  return yamlDocs(
    gateway('site', `https://127.0.0.1:${P.dir}/dir`, [
      { port: { number: P.https, name: 'https', protocol: 'HTTPS' }, hosts: ['localhost'], tls: { mode: 'SIMPLE', credentialName: 'site-cert' } },
      // pebble's validator connects to this port (its httpPort).
      { port: { number: P.http, name: 'http', protocol: 'HTTP' }, hosts: ['*'] },
    ]),
    gateway('unreachable', `https://127.0.0.1:${P.dead}/dir`, [
      { port: { number: P.https2, name: 'https', protocol: 'HTTPS' }, hosts: ['nowhere.localhost'], tls: { mode: 'SIMPLE', credentialName: 'nowhere-cert' } },
    ]),
    ...service('acmeecho', { v1: echo.port }),
    { apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'vs', namespace: 'default' }, spec: { hosts: ['*'], gateways: ['site'], http: [{ route: [{ destination: { host: 'acmeecho' } }] }] } },
  );
}

async function start(): Promise<GatewayProcess> {
  // The gateway inherits the environment: its state directory is the test's.
  process.env.GATEHOUSE_STATE_DIR = stateDir;
  try {
    return await startGateway({ files: { 'gw.yaml': config(), 'pebble.crt': pebbleCert }, args: ['--log-level', 'info'] });
  } finally {
    delete process.env.GATEHOUSE_STATE_DIR;
  }
}

beforeAll(async () => {
  let hasPebble = true;
  try {
    execFileSync('sh', ['-c', 'command -v pebble'], { stdio: 'ignore' });
  } catch {
    hasPebble = false;
  }
  if (!hasPebble) throw new Error('pebble is not installed: apt-get install -y pebble (.ci/run installs it)');
  work = mkdtempSync(join(tmpdir(), 'gatehouse-acme-'));
  stateDir = join(work, 'state');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', 'pebble.key', '-out', 'pebble.crt'], { cwd: work, stdio: 'ignore' });
  pebbleCert = readFileSync(join(work, 'pebble.crt'), 'utf8');
  const [dir, mgmt, tls01, http, https, https2, dead] = await freePorts(7);
  P = { dir: dir!, mgmt: mgmt!, tls01: tls01!, http: http!, https: https!, https2: https2!, dead: dead! };
  writeFileSync(
    join(work, 'pebble-config.json'),
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${P.dir}`,
        managementListenAddress: `127.0.0.1:${P.mgmt}`,
        certificate: 'pebble.crt',
        privateKey: 'pebble.key',
        httpPort: P.http,
        tlsPort: P.tls01,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
      },
    }),
  );
  pebble = spawn('pebble', ['-config', 'pebble-config.json'], { cwd: work, env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
  pebble.stdout!.on('data', (d: Buffer) => (pebbleLog += d.toString()));
  pebble.stderr!.on('data', (d: Buffer) => (pebbleLog += d.toString()));
  await waitFor(async () => (await fetchText(`https://127.0.0.1:${P.dir}/dir`, pebbleCert)).status === 200, 10_000, 100).catch((e: unknown) => {
    throw new Error(`pebble did not start: ${(e as Error).message}\n${pebbleLog}`);
  });
  echo = await startEcho('acmeecho');
  gw = await start();
}, 30_000);

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
  if (pebble?.pid !== undefined && pebble.exitCode === null) {
    pebble.kill('SIGTERM');
    await new Promise((r) => pebble!.once('exit', r));
  }
  if (work) removeDir(work);
});

describe('ACME certificates (pebble)', () => {
  let issued: PeerCertificate;

  it('answers the HTTP-01 challenge on its HTTP listener and serves the issued certificate', async () => {
    issued = await waitFor(async () => {
      const c = await handshake(P.https, 'localhost');
      return field(c.issuer, 'CN')?.startsWith('Pebble Intermediate CA') ? c : undefined;
    }, 15_000, 100);
    expect(issued.subjectaltname).toContain('DNS:localhost');
    // The chain verifies against pebble's root (a new one on every pebble start).
    const root = (await fetchText(`https://127.0.0.1:${P.mgmt}/roots/0`, pebbleCert)).text;
    const verified = await handshake(P.https, 'localhost', { rejectUnauthorized: true, ca: root });
    expect(verified.serialNumber).toBe(issued.serialNumber);
    expect(gw!.logs()).toContain('no ACME certificate yet; serving a self-signed placeholder');
    expect(gw!.logs()).toContain('ACME certificate issued');
  });

  it('routes HTTPS requests with the issued certificate', async () => {
    const root = (await fetchText(`https://127.0.0.1:${P.mgmt}/roots/0`, pebbleCert)).text;
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpsGet({ host: '127.0.0.1', port: P.https, servername: 'localhost', path: '/x', headers: { host: 'localhost' }, ca: root, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
    });
    expect(status).toBe(200);
  });

  it('keeps the account key and the certificate in the state directory', async () => {
    // One account key per directory.
    const accounts = readdirSync(join(stateDir, 'accounts')).map((d) => readFileSync(join(stateDir, 'accounts', d, 'directory.txt'), 'utf8').trim());
    expect(accounts).toContain(`https://127.0.0.1:${P.dir}/dir`);
    expect(existsSync(join(stateDir, 'accounts', readdirSync(join(stateDir, 'accounts'))[accounts.indexOf(`https://127.0.0.1:${P.dir}/dir`)]!, 'account.key'))).toBe(true);
    const certDir = join(stateDir, 'certs', 'default_site-cert');
    expect(existsSync(join(certDir, 'cert.pem'))).toBe(true);
    expect(existsSync(join(certDir, 'key.pem'))).toBe(true);
    const metrics = (await gw!.admin('/stats/prometheus')).text;
    expect(metrics).toMatch(/gatehouse_acme_orders_total\{secret="acme:\/\/default\/site-cert",result="success"\} 1/);
  });

  it('a directory that cannot be reached: the placeholder keeps serving, the failure is logged, counted and retried', async () => {
    const c = await handshake(P.https2, 'nowhere.localhost');
    expect(field(c.subject, 'O')).toBe('Gatehouse ACME placeholder');
    expect(c.subjectaltname).toBe('DNS:nowhere.localhost');
    await waitFor(() => gw!.logs().includes('ACME order failed'), 10_000);
    const line = gw!.logs().split('\n').find((l) => l.includes('ACME order failed'))!;
    expect(line).toContain('"retryInMs":5000');
    const metrics = (await gw!.admin('/stats/prometheus')).text;
    expect(metrics).toMatch(/gatehouse_acme_orders_total\{secret="acme:\/\/default\/nowhere-cert",result="failure"\} [1-9]/);
  });

  it('a restarted gateway reuses the stored certificate without a new order', async () => {
    await gw!.stop();
    gw = await start();
    const c = await handshake(P.https, 'localhost');
    expect(c.serialNumber).toBe(issued.serialNumber);
    expect(gw.logs()).toContain('using the stored ACME certificate');
    await sleep(300);
    expect((await gw.admin('/stats/prometheus')).text).not.toMatch(/gatehouse_acme_orders_total\{secret="acme:\/\/default\/site-cert"/);
  });
});
