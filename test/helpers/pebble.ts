// Debian's pebble (a test ACME directory, installed by .ci/run) on 127.0.0.1, with
// pebble-challtestsrv as its DNS server so that any name resolves to 127.0.0.1 (HTTP-01
// validations of `<anything>.gatehouse.test` reach the gateway's HTTP port). Both are started and
// stopped here, by PID; pebble's log is kept to count what it did (orders, accounts).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { join } from 'node:path';
import { freePorts, waitFor } from './net.js';

export interface Pebble {
  /** The ACME directory URL. */
  directory: string;
  /** PEM of pebble's own HTTPS listener certificate (trust it with `gatehouse.io/acme-ca-file`). */
  listenerCertFile: string;
  /** The port pebble's validator connects to for HTTP-01 (the gateway's HTTP port). */
  httpPort: number;
  log(): string;
  /** Orders created so far ("Added order" lines). */
  orders(): number;
  /** Accounts registered so far. */
  accounts(): number;
  /** PEM of pebble's root (a new one on every start). */
  root(): Promise<string>;
  stop(): Promise<void>;
}

/** GET over HTTPS trusting `ca` (pebble's listener certificate): status and body text. */
export function fetchText(url: string, ca: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsGet(url, { ca, timeout: 2000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

async function stopChild(p: ChildProcess | undefined): Promise<void> {
  if (p?.pid === undefined || p.exitCode !== null || p.signalCode !== null) return;
  p.kill('SIGTERM');
  await new Promise((r) => p.once('exit', r));
}

/** Starts pebble (validations without sleeps, no bad nonces, no reused authorizations) and its DNS. */
export async function startPebble(work: string): Promise<Pebble> {
  for (const cmd of ['pebble', 'pebble-challtestsrv']) {
    try {
      execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`${cmd} is not installed: apt-get install -y pebble (.ci/run installs it)`);
    }
  }
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', 'pebble.key', '-out', 'pebble.crt'], { cwd: work, stdio: 'ignore' });
  const cert = readFileSync(join(work, 'pebble.crt'), 'utf8');
  const [dir, mgmt, tls01, http, dns, dnsMgmt] = (await freePorts(6)) as [number, number, number, number, number, number];
  writeFileSync(
    join(work, 'pebble-config.json'),
    JSON.stringify({
      pebble: { listenAddress: `127.0.0.1:${dir}`, managementListenAddress: `127.0.0.1:${mgmt}`, certificate: 'pebble.crt', privateKey: 'pebble.key', httpPort: http, tlsPort: tls01, ocspResponderURL: '', externalAccountBindingRequired: false },
    }),
  );
  let log = '';
  const dnsLog: string[] = [];
  // Every A query answers 127.0.0.1; no AAAA (the gateway listens on IPv4 only).
  const dnsSrv = spawn('pebble-challtestsrv', ['-dns01', `127.0.0.1:${dns}`, '-http01', '', '-https01', '', '-tlsalpn01', '', '-management', `127.0.0.1:${dnsMgmt}`, '-defaultIPv4', '127.0.0.1', '-defaultIPv6', ''], { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
  dnsSrv.stdout!.on('data', (d: Buffer) => dnsLog.push(d.toString()));
  dnsSrv.stderr!.on('data', (d: Buffer) => dnsLog.push(d.toString()));
  const pebble = spawn('pebble', ['-config', 'pebble-config.json', '-dnsserver', `127.0.0.1:${dns}`], {
    cwd: work,
    env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  pebble.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  pebble.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const stop = async (): Promise<void> => {
    await stopChild(pebble);
    await stopChild(dnsSrv);
  };
  try {
    await waitFor(async () => (await fetchText(`https://127.0.0.1:${dir}/dir`, cert)).status === 200, 10_000, 100);
  } catch (e) {
    await stop();
    throw new Error(`pebble did not start: ${(e as Error).message}\n${log}\n${dnsLog.join('')}`);
  }
  const count = (re: RegExp): number => log.match(re)?.length ?? 0;
  return {
    directory: `https://127.0.0.1:${dir}/dir`,
    listenerCertFile: join(work, 'pebble.crt'),
    httpPort: http,
    log: () => log,
    orders: () => count(/Added order "/g),
    accounts: () => Number([...log.matchAll(/There are now (\d+) accounts in memory/g)].pop()?.[1] ?? 0),
    root: async () => (await fetchText(`https://127.0.0.1:${mgmt}/roots/0`, cert)).text,
    stop,
  };
}
