// The `gatehouse` command line as a user runs it: validate, run failures, usage errors, version.
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeDir, ROOT, runCli, tempConfigDir } from '../helpers/gateway.js';
import { freePort, freePorts } from '../helpers/net.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const GOOD = {
  'gw.yaml': yamlDocs(gateway('gw', 18080)),
  'app.yaml': yamlDocs(...service('app', { v1: 19001, v2: 19002 }), virtualService('app', ['app.test'], [{ route: [dest('app', 'v1', 70), dest('app', 'v2', 30)] }])),
};
const BAD = {
  ...GOOD,
  'vs.yaml': yamlDocs(virtualService('broken', ['broken.test'], [{ route: [dest('app', 'v1', 50), dest('app', 'v2', 40)] }])),
  'syntax.yaml': 'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: [unclosed\n',
};

const dirs: string[] = [];
const dir = (files: Record<string, string>): string => {
  const d = tempConfigDir(files);
  dirs.push(d);
  return d;
};

afterAll(() => {
  for (const d of dirs) removeDir(d);
});

const runArgs = async (configDir: string, extra: string[] = []): Promise<string[]> => [
  'run', '--config', configDir, '--bind', '127.0.0.1', '--admin-port', String(await freePort()), '--xds-port', '0', '--log-level', 'warn', '--labels', 'istio=ingressgateway', ...extra,
];

describe.concurrent('cli: gatehouse validate', () => {
  it('a good folder: exit 0, no problems printed', async () => {
    const r = await runCli(['validate', dir(GOOD)]);
    expect(r.stdout).toBe('');
    expect(r.code).toBe(0);
  });

  it('a bad folder: exit 1, one `file:line: Kind/ns/name: path: message` line per problem on stdout', async () => {
    const d = dir(BAD);
    const r = await runCli(['validate', d]);
    expect(r.code).toBe(1);
    const lines = r.stdout.trim().split('\n');
    const vsFile = join(d, 'vs.yaml');
    const weight = lines.find((l) => l.startsWith(`${vsFile}:`));
    expect(weight).toMatch(/^\S+vs\.yaml:\d+: VirtualService\/default\/broken: spec\.http\[0\]\.route\[1\]\.weight: .*90/);
    // The line number points at the offending field.
    const lineNo = Number(/:(\d+):/.exec(weight!)![1]);
    expect(readFileSync(vsFile, 'utf8').split('\n')[lineNo - 1]).toMatch(/weight: 40/);
    expect(lines.some((l) => new RegExp(`^${join(d, 'syntax.yaml').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+: yaml: `).test(l))).toBe(true);
    for (const l of lines) expect(l).toMatch(/^\S+\.yaml:\d+: /);
  });

  it('a single file can be validated, and its path is printed as given', async () => {
    const d = dir(BAD);
    const r = await runCli(['validate', join(d, 'vs.yaml'), join(d, 'app.yaml')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`${join(d, 'vs.yaml')}:`);
  });

  it('a VirtualService naming a subset no DestinationRule defines is reported', async () => {
    const d = dir({ ...GOOD, 'vs.yaml': yamlDocs(virtualService('nosub', ['nosub.test'], [{ route: [dest('app', 'v7')] }])) });
    const r = await runCli(['validate', d]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/vs\.yaml:\d+: VirtualService\/default\/nosub: spec\.http\[0\]\.route\[0\]\.destination\.subset: /);
  });
});

describe.concurrent('cli: control-plane commands', () => {
  it('validate warns, with file and line, about mesh routes a proxyless gRPC client cannot honour', async () => {
    const grpcSvc = yamlDocs({
      apiVersion: 'networking.istio.io/v1',
      kind: 'ServiceEntry',
      metadata: { name: 'rpc', namespace: 'default' },
      spec: { hosts: ['rpc.default.svc.cluster.local'], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: 50051, name: 'grpc', protocol: 'GRPC' }], endpoints: [{ address: '127.0.0.1' }] },
    });
    const vs = yamlDocs(virtualService('rpc', ['rpc'], [{ match: [{ uri: { prefix: '/old' } }], redirect: { uri: '/new' } }, { route: [dest('rpc')] }], { gateways: ['mesh'] }));
    const d = dir({ 'rpc.yaml': grpcSvc, 'vs.yaml': vs });
    const r = await runCli(['validate', d]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/vs\.yaml:\d+: VirtualService\/default\/rpc: spec\.http\[0\]\.redirect: warning: proxyless gRPC clients reject route configurations with redirects/);
  });

  it('proxy-status with a bad address is a usage error; with nothing listening it fails clearly', async () => {
    const bad = await runCli(['proxy-status', '--xds-address', 'nohost']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--xds-address must be host:port');
    const port = await freePort();
    const down = await runCli(['proxy-status', '--xds-address', `127.0.0.1:${port}`], 15_000);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/gatehouse: proxy-status: .*127\.0\.0\.1:\d+/);
  });
});

describe.concurrent('cli: gatehouse run failures', () => {
  it('run with an invalid configuration prints the problems and exits 1', async () => {
    const d = dir(BAD);
    const r = await runCli(await runArgs(d), 10_000);
    expect(r.code).toBe(1);
    const out = r.stdout + r.stderr;
    expect(out).toMatch(/vs\.yaml:\d+: VirtualService\/default\/broken: spec\.http\[0\]\.route\[1\]\.weight: /);
    expect(out).toMatch(/syntax\.yaml:\d+: yaml: /);
  });

  it('run with a Gateway port already in use exits 1 with a clear message', async () => {
    const [busy] = await freePorts(1);
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(busy, '127.0.0.1', () => r()));
    try {
      const d = dir({ 'gw.yaml': yamlDocs(gateway('gw', busy!)) });
      const r = await runCli(await runArgs(d), 10_000);
      expect(r.code).toBe(1);
      const out = r.stdout + r.stderr;
      expect(out).toContain(String(busy));
      expect(out).toMatch(/in use|EADDRINUSE/i);
    } finally {
      await new Promise<void>((r) => blocker.close(() => r()));
    }
  });

  it('run without --config is a usage error (exit 2)', async () => {
    const r = await runCli(['run', '--admin-port', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage:');
  });
});

describe.concurrent('cli: usage and version', () => {
  it('an unknown flag exits 2 and prints the usage', async () => {
    const r = await runCli(['run', '--config', '/nonexistent', '--no-such-flag']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage:');
    expect(r.stderr).toContain('gatehouse run --config');
  });

  it('an unknown command exits 2 and prints the usage', async () => {
    const r = await runCli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage:');
  });

  it('version prints the package version and exits 0', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = await runCli(['version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`gatehouse ${pkg.version}`);
  });
});

