#!/usr/bin/env node
// The `gatehouse` command line (CONTRACT.md). Every flag of the contract is parsed from the start;
// unknown flags are errors with the usage text.
import os from 'node:os';
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { problemLine } from './config/pipeline.js';
import { DEFAULT_GATEWAY_LABELS } from './config/validate-refs.js';
import { HTTP1_ENGINES, type Http1Engine } from './controlplane/snapshot.js';
import { ConfigError, Gateway, type RunOptions } from './gateway.js';
import { edgeLimits } from './ingress/edge-limits.js';
import { createLogger, defaultLogFormat, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from './telemetry/log.js';
import { loadCheckedConfig } from './workers/config-job.js';
import { WORKER_MODES, type WorkerMode } from './workers/protocol.js';

export const USAGE = `Usage:
  gatehouse run --config <file|dir> [--config ...]   (or --xds-address host:port)
                [--bind 0.0.0.0] [--admin-port 15000] [--admin-bind 127.0.0.1] [--xds-port 15010]
                [--labels istio=ingressgateway] [--namespace istio-system] [--mesh-config <file>]
                [--workers N] [--worker-mode processes|threads] [--http1-engine uws|strict]
                [--log-level info] [--log-format pretty|json]
  gatehouse run --kubernetes [--kubeconfig <file>] [--watch-namespaces ns,...] [--cluster-domain cluster.local]
                [--write-status] [--config <file|dir> ...] [the other run flags above]
  gatehouse validate <file|dir>... [--labels istio=ingressgateway] [--namespace istio-system] [--mesh-config <file>]
  gatehouse proxy-status --xds-address host:port [-o json]
  gatehouse ca sign --spiffe spiffe://cluster.local/ns/<ns>/sa/<sa> [--out-dir .] [--ttl 24h | --days N] [--csr <file>]
  gatehouse ca root
  gatehouse version
`;

class UsageError extends Error {}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function parsePort(name: string, v: string | undefined, def: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--${name} must be a port number 0-65535, got "${v}"`);
  return n;
}

/** `host:port` (IPv6 in brackets), checked before a connection is attempted. */
function parseHostPort(name: string, v: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw new UsageError(`--${name} must be host:port, got "${v}"`);
  return { host: m[1]!, port };
}

/** `a=b,c=d` (also repeated flags) → labels. */
export function parseLabels(values: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const v of values) {
    for (const part of v.split(',')) {
      if (!part.trim()) continue;
      const i = part.indexOf('=');
      if (i <= 0) throw new UsageError(`--labels takes key=value pairs separated by commas, got "${part}"`);
      labels[part.slice(0, i).trim()] = part.slice(i + 1).trim();
    }
  }
  return labels;
}

const RUN_OPTIONS = {
  config: { type: 'string', multiple: true },
  'xds-address': { type: 'string' },
  bind: { type: 'string' },
  'admin-port': { type: 'string' },
  'admin-bind': { type: 'string' },
  'xds-port': { type: 'string' },
  labels: { type: 'string', multiple: true },
  namespace: { type: 'string' },
  'mesh-config': { type: 'string' },
  workers: { type: 'string' },
  'worker-mode': { type: 'string' },
  'http1-engine': { type: 'string' },
  'log-level': { type: 'string' },
  'log-format': { type: 'string' },
  kubernetes: { type: 'boolean' },
  kubeconfig: { type: 'string' },
  'watch-namespaces': { type: 'string', multiple: true },
  'cluster-domain': { type: 'string' },
  'write-status': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** `--kubernetes` and its flags, checked before anything starts. */
function kubernetesOptions(values: { kubernetes?: boolean | undefined; kubeconfig?: string | undefined; 'watch-namespaces'?: string[] | undefined; 'cluster-domain'?: string | undefined; 'write-status'?: boolean | undefined; 'xds-address'?: string | undefined }): RunOptions['kubernetes'] {
  const given = (['kubeconfig', 'watch-namespaces', 'cluster-domain', 'write-status'] as const).filter((f) => values[f] !== undefined);
  if (!values.kubernetes) {
    if (given.length > 0) throw new UsageError(`--${given[0]} needs --kubernetes`);
    return undefined;
  }
  if (values['xds-address'] !== undefined) throw new UsageError('--kubernetes and --xds-address exclude each other');
  let watchNamespaces: string[] | null = null;
  if (values['watch-namespaces'] !== undefined) {
    const list = values['watch-namespaces'].flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
    if (list.length === 0) throw new UsageError('--watch-namespaces takes namespace names separated by commas');
    for (const ns of list) if (!DNS_LABEL.test(ns) || ns.length > 63) throw new UsageError(`--watch-namespaces: "${ns}" is not a namespace name`);
    watchNamespaces = [...new Set(list)];
  }
  const clusterDomain = values['cluster-domain'] ?? 'cluster.local';
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(clusterDomain)) throw new UsageError(`--cluster-domain must be a DNS domain, got "${clusterDomain}"`);
  if (values.kubeconfig === '') throw new UsageError('--kubeconfig needs a file');
  return { kubeconfig: values.kubeconfig, watchNamespaces, clusterDomain, writeStatus: values['write-status'] === true };
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'run':
        return await run(rest);
      case 'validate':
        return validateCommand(rest);
      case 'proxy-status':
        return await proxyStatus(rest);
      case 'ca':
        return await caCommand(rest);
      case 'version':
      case '--version':
        process.stdout.write(`gatehouse ${version()}\n`);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`gatehouse: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }
}

async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: RUN_OPTIONS, allowPositionals: false, strict: true });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const level = (values['log-level'] ?? 'info') as LogLevel;
  if (!LOG_LEVELS.includes(level)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  // Readable lines on a terminal, JSON lines otherwise (log collectors), unless --log-format says.
  const format = (values['log-format'] ?? defaultLogFormat()) as LogFormat;
  if (!LOG_FORMATS.includes(format)) throw new UsageError(`--log-format must be one of ${LOG_FORMATS.join(', ')}`);
  const configPaths = values.config ?? [];
  const kubernetes = kubernetesOptions(values);
  if (configPaths.length === 0 && !values['xds-address'] && !kubernetes) throw new UsageError('run needs --config <file|dir>, --kubernetes, or --xds-address host:port');
  if (values['xds-address'] !== undefined) {
    if (configPaths.length > 0) throw new UsageError('--config and --xds-address exclude each other');
    parseHostPort('xds-address', values['xds-address']);
  }
  // Default: one data-plane worker per core the process may use (1: everything on the main thread).
  const workers = values.workers === undefined ? os.availableParallelism() : Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1) throw new UsageError('--workers must be a positive integer');
  // Processes (default) let every port kind use every worker; threads share one process.
  const workerMode = (values['worker-mode'] ?? 'processes') as WorkerMode;
  if (!WORKER_MODES.includes(workerMode)) throw new UsageError(`--worker-mode must be one of ${WORKER_MODES.join(', ')}, got "${values['worker-mode']}"`);
  // The HTTP/1.1 engine of plain HTTP and SIMPLE HTTPS ports (a Gateway annotation overrides it).
  const http1Engine = (values['http1-engine'] ?? 'uws') as Http1Engine;
  if (!HTTP1_ENGINES.includes(http1Engine)) throw new UsageError(`--http1-engine must be one of ${HTTP1_ENGINES.join(', ')}, got "${values['http1-engine']}"`);
  // The GATEHOUSE_* edge limits (timeouts, HTTP/2 streams), checked before anything starts.
  try {
    edgeLimits();
  } catch (e) {
    process.stderr.write(`gatehouse: ${(e as Error).message}\n`);
    return 2;
  }
  // Given labels replace the default (Istio's ingress gateway deployment's).
  const labels = values.labels === undefined ? { ...DEFAULT_GATEWAY_LABELS } : parseLabels(values.labels);
  const logOptions = { format, colorize: format === 'pretty' && process.stdout.isTTY === true && !process.env.NO_COLOR };
  const log = createLogger(level, logOptions);
  const opts: RunOptions = {
    configPaths,
    bind: values.bind ?? '0.0.0.0',
    adminPort: parsePort('admin-port', values['admin-port'], 15000),
    adminBind: values['admin-bind'] ?? '127.0.0.1',
    xdsPort: parsePort('xds-port', values['xds-port'], 15010),
    labels,
    namespace: values.namespace ?? 'istio-system',
    meshConfigFile: values['mesh-config'],
    xdsAddress: values['xds-address'],
    workers,
    workerMode,
    http1Engine,
    logLevel: level,
    logOptions,
    kubernetes,
  };
  if (workers > 1) log.info({ workers, mode: workerMode }, `data plane on ${workers} worker ${workerMode}`);

  const gateway = new Gateway(opts, log);
  // Signals are handled from the start: with --kubernetes, starting waits for the API server.
  let stopRequested = false;
  let resolveExit!: (code: number) => void;
  const exit = new Promise<number>((r) => (resolveExit = r));
  const stop = (signal: string): void => {
    stopRequested = true;
    log.info({ signal }, 'shutting down');
    gateway.stop().then(
      () => resolveExit(0),
      (err: unknown) => {
        log.error({ err }, 'error while stopping');
        resolveExit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  try {
    await gateway.start();
  } catch (e) {
    if (stopRequested) return await exit;
    if (e instanceof ConfigError) {
      // Every problem, as `validate` prints them (warnings too: they may explain the errors).
      for (const p of e.problems) process.stderr.write(`${problemLine(p)}\n`);
      const errors = e.problems.filter((p) => p.severity === 'error').length;
      log.fatal({ problems: errors }, `invalid configuration at start-up (${errors} error${errors === 1 ? '' : 's'}, printed above); not starting`);
    } else {
      log.fatal({ err: e }, `cannot start: ${(e as Error).message}`);
    }
    await gateway.stop(0);
    return 1;
  }
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception (kept serving)'));
  return await exit;
}

function validateCommand(args: string[]): number {
  const { values, positionals } = parseArgs({
    args,
    options: { labels: { type: 'string', multiple: true }, namespace: { type: 'string' }, 'mesh-config': { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length === 0) throw new UsageError('validate needs at least one file or folder');
  // Without --labels: every Gateway is checked (certificates, servers, translation), and those the
  // default labels would not select are reported, as `run` without --labels would skip them.
  const labels = values.labels === undefined ? { ...DEFAULT_GATEWAY_LABELS } : parseLabels(values.labels);
  const result = loadCheckedConfig({
    paths: positionals,
    meshConfigFile: values['mesh-config'],
    namespace: values.namespace ?? 'istio-system',
    labels,
    allGateways: values.labels === undefined,
    translationWarnings: true,
  });
  for (const p of result.problems) process.stdout.write(`${problemLine(p)}\n`);
  return result.problems.some((p) => p.severity === 'error') ? 1 : 0;
}

async function proxyStatus(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { 'xds-address': { type: 'string' }, output: { type: 'string', short: 'o' } }, strict: true });
  if (!values['xds-address']) throw new UsageError('proxy-status needs --xds-address host:port');
  parseHostPort('xds-address', values['xds-address']);
  if (values.output !== undefined && values.output !== 'json') throw new UsageError('--output must be json');
  try {
    // grpc-js (the xDS client) is imported by this command only.
    const { fetchSyncz, formatSyncz } = await import('./controlplane/xds/status-client.js');
    const s = await fetchSyncz(values['xds-address']);
    process.stdout.write(values.output === 'json' ? `${JSON.stringify(s, null, 2)}\n` : formatSyncz(s));
    return 0;
  } catch (e) {
    process.stderr.write(`gatehouse: proxy-status: ${(e as Error).message}\n`);
    return 1;
  }
}

/**
 * `ca sign`: a workload certificate from the mesh CA (the gateway's state dir or
 * GATEHOUSE_CA_CERT/KEY), written as a proxyless bootstrap's file_watcher provider reads it:
 * cert-chain.pem, key.pem, root-cert.pem. `ca root`: the root certificate on stdout.
 */
async function caCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { MeshCa, MeshCaError, workloadTtlMs } = await import('./tls/mesh-ca.js');
  const { parseSpiffeId } = await import('./tls/spiffe.js');
  try {
    if (sub === 'root') {
      parseArgs({ args: rest, options: {}, strict: true });
      process.stdout.write((await MeshCa.open()).rootPem);
      return 0;
    }
    if (sub !== 'sign') throw new UsageError(sub ? `unknown ca command "${sub}" (sign, root)` : 'ca needs a command: sign or root');
    const { values } = parseArgs({
      args: rest,
      options: { spiffe: { type: 'string' }, 'out-dir': { type: 'string' }, days: { type: 'string' }, ttl: { type: 'string' }, csr: { type: 'string' } },
      strict: true,
    });
    if (!values.spiffe) throw new UsageError('ca sign needs --spiffe spiffe://<trust domain>/ns/<namespace>/sa/<service account>');
    const id = parseSpiffeId(values.spiffe);
    if (!id) throw new UsageError(`--spiffe must be spiffe://<trust domain>/ns/<namespace>/sa/<service account>, got "${values.spiffe}"`);
    if (values.days !== undefined && values.ttl !== undefined) throw new UsageError('--days and --ttl exclude each other');
    let ttlMs: number;
    if (values.days !== undefined) {
      const d = Number(values.days);
      if (!(d > 0) || d > 90) throw new UsageError(`--days must be a number of days up to 90, got "${values.days}"`);
      ttlMs = d * 86_400_000;
    } else if (values.ttl !== undefined) {
      try {
        ttlMs = workloadTtlMs({ GATEHOUSE_WORKLOAD_CERT_TTL: values.ttl });
      } catch {
        throw new UsageError(`--ttl must be a duration such as 24h or 10s, at most 90 days, got "${values.ttl}"`);
      }
    } else {
      ttlMs = workloadTtlMs();
    }
    const ca = await MeshCa.open({ trustDomain: id.trustDomain });
    const csrPem = values.csr !== undefined ? readFileSync(values.csr, 'utf8') : undefined;
    const issued = await ca.issue({ spiffeId: values.spiffe, ttlMs, ...(csrPem ? { csrPem } : {}) });
    const { mkdirSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const out = values['out-dir'] ?? '.';
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'cert-chain.pem'), issued.certChainPem);
    if (issued.keyPem) writeFileSync(join(out, 'key.pem'), issued.keyPem, { mode: 0o600 });
    writeFileSync(join(out, 'root-cert.pem'), issued.rootPem);
    process.stdout.write(`${values.spiffe}: ${join(out, 'cert-chain.pem')}${issued.keyPem ? `, ${join(out, 'key.pem')}` : ''}, ${join(out, 'root-cert.pem')} (valid until ${issued.notAfter.toISOString()})\n`);
    return 0;
  } catch (e) {
    if (e instanceof MeshCaError || (e as NodeJS.ErrnoException).code === 'ENOENT') {
      process.stderr.write(`gatehouse: ca: ${(e as Error).message}\n`);
      return 1;
    }
    throw e;
  }
}

// Run when executed (bin or `node dist/cli.js`), not when imported by tests.
function invokedDirectly(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}
if (invokedDirectly()) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`gatehouse: ${(err as Error)?.stack ?? err}\n`);
      process.exit(1);
    },
  );
}
