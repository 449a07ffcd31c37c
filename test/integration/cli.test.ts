// The `gatehouse` command line as a user runs it: validate, run failures, usage errors, version;
// default labels, start-up reporting and the log formats.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, removeDir, ROOT, runCli, startGateway, tempConfigDir } from '../helpers/gateway.js';
import { freePort, freePorts, http, rawExchange, rawStatus, waitFor } from '../helpers/net.js';
import { startEcho } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

const GOOD = {
  'gw.yaml': yamlDocs(gateway('gw', 18080)),
  'app.yaml': yamlDocs(...service('app', { v1: 19001, v2: 19002 }), virtualService('app', ['app.test'], [{ route: [dest('app', 'v1', 70), dest('app', 'v2', 30)] }])),
};
const BAD = {
  ...GOOD,
  // A negative weight (weights are relative: any sum above 0 is valid Istio).
  'vs.yaml': yamlDocs(virtualService('broken', ['broken.test'], [{ route: [dest('app', 'v1', 50), dest('app', 'v2', -40)] }])),
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
  'run', '--config', configDir, '--bind', '127.0.0.1', '--admin-port', String(await freePort()), '--xds-port', '0', '--log-level', 'warn', '--labels', 'istio=ingressgateway', '--workers', '1', ...extra,
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
    expect(weight).toMatch(/^\S+vs\.yaml:\d+: VirtualService\/default\/broken: spec\.http\[0\]\.route\[1\]\.weight: .*-40/);
    // The line number points at the offending field.
    const lineNo = Number(/:(\d+):/.exec(weight!)![1]);
    expect(readFileSync(vsFile, 'utf8').split('\n')[lineNo - 1]).toMatch(/weight: -40/);
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


/** The line of `file` (1-based) a problem line points at. */
const lineOf = (problem: string): number => Number(/^\S+?:(\d+): /.exec(problem)![1]);

/** A Gateway like Istio's egress gateway samples: `selector: {istio: egressgateway}`. */
const egressGateway = (port: number): Obj => {
  const g = gateway('egress', port) as { spec: { selector: Record<string, string> } };
  g.spec.selector = { istio: 'egressgateway' };
  return g as unknown as Obj;
};

// Gateways started one at a time: the machine may be busy with other suites.
describe('cli: default labels (istio=ingressgateway) and Gateways that select nothing', () => {
  it('run without --labels serves a Gateway selecting istio: ingressgateway, as Istio\'s samples all do', async () => {
    const echo = await startEcho('app');
    const port = await freePort();
    const gw = await startGateway({
      defaultLabels: true,
      files: { 'gw.yaml': yamlDocs(gateway('gw', port)), 'app.yaml': yamlDocs(...service('app', { v1: echo.port }), virtualService('app', ['app.test'], [{ route: [dest('app', 'v1')] }])) },
    });
    try {
      const r = await http(port, '/hello', { headers: { host: 'app.test' } });
      expect(r.status).toBe(200);
      expect(echo.requests.map((q) => q.url)).toEqual(['/hello']);
    } finally {
      await gw.stop();
      await echo.close();
    }
  });

  it('validate reports a Gateway the default labels do not select, at its selector, with the labels and the fix; --labels replaces the default', async () => {
    const d = dir({ 'gw.yaml': yamlDocs(gateway('gw', 18080), egressGateway(18081)) });
    const r = await runCli(['validate', d]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/gw\.yaml:\d+: Gateway\/default\/egress: spec\.selector: warning: \[IST0101\] selector istio=egressgateway selects nothing here: this gateway's labels are istio=ingressgateway \(the default\), .*\(run with --labels istio=egressgateway to serve them\)$/);
    expect(readFileSync(join(d, 'gw.yaml'), 'utf8').split('\n')[lineOf(lines[0]!) - 1]).toMatch(/selector:/);
    const egress = await runCli(['validate', '--labels', 'istio=egressgateway', d]);
    expect(egress.code).toBe(0);
    expect(egress.stdout.trim().split('\n')).toEqual([expect.stringMatching(/Gateway\/default\/gw: spec\.selector: warning: \[IST0101\] selector istio=ingressgateway selects nothing here: this gateway's labels are istio=egressgateway, .*\(run with --labels istio=ingressgateway to serve them\)$/)]);
  });

  it('run logs the skipped Gateway with file:line and the labels, and which Gateways were selected', async () => {
    const [p1, p2] = (await freePorts(2)) as [number, number];
    const gw = await startGateway({ defaultLabels: true, args: ['--log-level', 'info'], files: { 'gw.yaml': yamlDocs(gateway('gw', p1), egressGateway(p2)) } });
    try {
      const file = join(gw.dir, 'gw.yaml');
      const records = await waitFor(() => {
        const rs = jsonLines(gw.stdout());
        return rs.some((l) => String(l.msg).startsWith('Gateways for labels')) ? rs : undefined;
      }, 5000);
      const warning = records.find((l) => String(l.msg).includes('[IST0101]'));
      expect(warning?.level).toBe(40);
      expect(String(warning?.msg)).toMatch(new RegExp(`^config warning: ${escape(file)}:\\d+: Gateway/default/egress: spec\\.selector: .*istio=ingressgateway \\(the default\\)`));
      const selection = records.find((l) => String(l.msg).startsWith('Gateways for labels'))!;
      expect(selection.msg).toMatch(new RegExp(`^Gateways for labels istio=ingressgateway \\(the default\\): selected default/gw \\(${escape(file)}:1\\); skipped default/egress \\(${escape(file)}:\\d+: selector istio=egressgateway\\)`));
      expect(await http(p2, '/', { headers: { host: 'x' } }).catch((e: Error) => e.message)).toMatch(/ECONNREFUSED/);
    } finally {
      await gw.stop();
    }
  });

  it('a start with no listener at all says so, with the labels in force and what to run instead', async () => {
    const port = await freePort();
    const gw = await startGateway({ defaultLabels: true, files: { 'gw.yaml': yamlDocs(egressGateway(port)) } });
    try {
      const file = join(gw.dir, 'gw.yaml');
      const warning = await waitFor(() => jsonLines(gw.stdout()).find((l) => String(l.msg).startsWith('no listener')), 5000);
      expect(warning.level).toBe(40);
      const selectorLine = readFileSync(file, 'utf8').split('\n').findIndex((l) => l.includes('selector:')) + 1;
      expect(warning.msg).toBe(`no listener: no Gateway selects this gateway's labels istio=ingressgateway (the default): default/egress (${file}:${selectorLine}: selector istio=egressgateway); run with --labels istio=egressgateway`);
    } finally {
      await gw.stop();
    }
  });
});

describe('cli: a reload that leaves no listener', () => {
  it('is logged as such, with the labels in force, after the config warning naming the Gateway', async () => {
    const [p1, p2] = (await freePorts(2)) as [number, number];
    const gw = await startGateway({ defaultLabels: true, files: { 'gw.yaml': yamlDocs(gateway('gw', p1)) } });
    try {
      gw.writeFile('gw.yaml', yamlDocs(egressGateway(p2)));
      const warning = await waitFor(() => jsonLines(gw.stdout()).find((l) => String(l.msg).startsWith('no listener')), 5000);
      expect(warning.msg).toBe("no listener: this configuration opens no port for this gateway's labels istio=ingressgateway (the default); see the config warnings above");
      expect(jsonLines(gw.stdout()).some((l) => String(l.msg).includes('Gateway/default/egress: spec.selector: [IST0101]'))).toBe(true);
      expect(await http(p1, '/', { headers: { host: 'x' } }).catch((e: Error) => e.message)).toMatch(/ECONNREFUSED|socket hang up|ECONNRESET/);
    } finally {
      await gw.stop();
    }
  });
});

describe('cli: every problem at once', () => {
  // One input with an error (a missing subset), a certificate problem and a translation warning.
  const files = (): Record<string, string> => {
    const g = gateway('gw', 18080, ['*'], { servers: [{ port: { number: 18443, name: 'https', protocol: 'HTTPS' }, hosts: ['*'], tls: { mode: 'SIMPLE', serverCertificate: 'missing-cert.pem', privateKey: 'missing-key.pem' } }] });
    return {
      'gw.yaml': yamlDocs(g),
      'app.yaml': yamlDocs(
        ...service('app', { v1: 19001 }),
        virtualService('app', ['app.test'], [
          { match: [{ uri: { prefix: '/nosub' } }], route: [dest('app', 'v7')] },
          { match: [{ uri: { prefix: '/abort' } }], fault: { abort: { http2Error: 'REFUSED_STREAM', percentage: { value: 1 } } }, route: [dest('app', 'v1')] },
          { route: [dest('app', 'v1')] },
        ]),
      ),
    };
  };
  const expectAll = (out: string, d: string): void => {
    const lines = out.trim().split('\n').filter((l) => l.includes(d));
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/app\.yaml:\d+: VirtualService\/default\/app: spec\.http\[0\]\.route\[0\]\.destination\.subset: subset "v7" is not defined/),
        expect.stringMatching(/gw\.yaml:\d+: Gateway\/default\/gw: spec\.servers\[1\]\.tls\.serverCertificate: cannot read certificate .*missing-cert\.pem/),
        expect.stringMatching(/app\.yaml:\d+: VirtualService\/default\/app: spec\.http\[1\]\.fault\.abort\.http2Error: warning: http2Error aborts are not implemented/),
      ]),
    );
    // Sorted by file, then line.
    const keys = lines.map((l) => /^(\S+?):(\d+):/.exec(l)!).map((m) => [m[1]!, Number(m[2])] as const);
    expect([...keys].sort((a, b) => (a[0] === b[0] ? a[1] - b[1] : a[0] < b[0] ? -1 : 1))).toEqual(keys);
  };

  it('validate: a missing subset does not hide the certificate problem and the translation warning', async () => {
    const d = dir(files());
    const r = await runCli(['validate', d]);
    expect(r.code).toBe(1);
    expectAll(r.stdout, d);
  });

  it('run at start-up prints them all too, and exits 1', async () => {
    const d = dir(files());
    const r = await runCli(await runArgs(d));
    expect(r.code).toBe(1);
    expectAll(r.stderr, d);
  });

  it('validate runs the analyzer: a rule after a catch-all is reported (IST0130)', async () => {
    const d = dir({ ...GOOD, 'vs.yaml': yamlDocs(virtualService('dead', ['dead.test'], [{ route: [dest('app', 'v1')] }, { match: [{ uri: { prefix: '/x' } }], route: [dest('app', 'v2')] }])) });
    const r = await runCli(['validate', d]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/vs\.yaml:\d+: VirtualService\/default\/dead: spec\.http\[1\]: warning: \[IST0130\] VirtualService rule #1 not used \(route without matches defined before\)/);
  });
});

/** The JSON records among these lines (every line, when the format is json). */
function jsonLines(text: string): Array<Record<string, unknown>> {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('cli: logs', () => {
  it('stdout not a terminal: one JSON object per line; the start-up line names every listener, its engine, admin and xDS', async () => {
    const [port, xds] = (await freePorts(2)) as [number, number];
    const gw = await startGateway({ args: ['--log-level', 'info', '--xds-port', String(xds)], files: { 'gw.yaml': yamlDocs(gateway('gw', port)) } });
    try {
      const ready = await waitFor(() => jsonLines(gw.stdout()).find((l) => String(l.msg).startsWith('ready:')), 5000);
      for (const l of gw.stdout().split('\n').filter(Boolean)) expect(() => JSON.parse(l), l).not.toThrow();
      expect(ready.msg).toBe(`ready: listening on 127.0.0.1:${port} (HTTP on uWS); admin on 127.0.0.1:${gw.adminPort}; xDS on 127.0.0.1:${xds}`);
      expect(ready.listeners).toEqual([{ address: `127.0.0.1:${port}`, protocol: 'HTTP', engine: 'uWS', serves: 'HTTP/1.1', gateways: ['default/gw'] }]);
      expect(ready.admin).toBe(`127.0.0.1:${gw.adminPort}`);
    } finally {
      await gw.stop();
    }
  });

  it('--http1-engine strict: plain HTTP ports run on node:http (the start-up line says so) unless their Gateway asks for uws', async () => {
    const [strict, uws] = (await freePorts(2)) as [number, number];
    const annotated = { ...gateway('gw-uws', uws), metadata: { name: 'gw-uws', namespace: 'default', annotations: { 'gatehouse.io/http1-engine': 'uws' } } };
    const gw = await startGateway({ args: ['--log-level', 'info', '--http1-engine', 'strict'], files: { 'gw.yaml': yamlDocs(gateway('gw', strict), annotated) } });
    try {
      const ready = await waitFor(() => jsonLines(gw.stdout()).find((l) => String(l.msg).startsWith('ready:')), 5000);
      expect(ready.msg).toContain(`127.0.0.1:${strict} (HTTP on node:http)`);
      expect(ready.msg).toContain(`127.0.0.1:${uws} (HTTP on uWS)`);
      expect(ready.listeners).toEqual(
        expect.arrayContaining([
          { address: `127.0.0.1:${strict}`, protocol: 'HTTP', engine: 'node:http', serves: 'HTTP/1.1', gateways: ['default/gw'] },
          { address: `127.0.0.1:${uws}`, protocol: 'HTTP', engine: 'uWS', serves: 'HTTP/1.1', gateways: ['default/gw-uws'] },
        ]),
      );
      // Whitespace before a colon: the strict engine answers 400; uWS gives no answer at all.
      const bad = 'GET / HTTP/1.1\r\nHost: a.test\r\nX-A : b\r\n\r\n';
      expect(rawStatus((await rawExchange(strict, bad, { timeoutMs: 2000 })).data)).toBe(400);
      expect((await rawExchange(uws, bad, { timeoutMs: 500 })).data).toBe('');
    } finally {
      await gw.stop();
    }
  });

  it('--log-format pretty: readable lines, no JSON', async () => {
    const port = await freePort();
    const gw = await startGateway({ args: ['--log-level', 'info', '--log-format', 'pretty'], files: { 'gw.yaml': yamlDocs(gateway('gw', port)) } });
    try {
      await waitFor(() => gw.stdout().includes('ready: '), 5000);
      const lines = gw.stdout().split('\n').filter(Boolean);
      for (const l of lines) expect(l).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] (TRACE|DEBUG|INFO|WARN|ERROR|FATAL): /);
      const ready = new RegExp(`INFO: ready: listening on 127\\.0\\.0\\.1:${port} \\(HTTP on uWS\\); admin on 127\\.0\\.0\\.1:${gw.adminPort}; xDS off version=\\S+$`);
      expect(lines.some((l) => ready.test(l))).toBe(true);
      expect(lines.some((l) => /INFO: \[ingress\] listening \(HTTP\/1\.1\) port=\d+ bind=127\.0\.0\.1 engine=http$/.test(l))).toBe(true);
    } finally {
      await gw.stop();
    }
  });

  it('on a terminal, readable lines by default', async () => {
    const d = dir(BAD);
    // `script` runs the command on a pseudo-terminal; an invalid configuration ends it by itself.
    const cmd = [process.execPath, CLI, ...(await runArgs(d))].map((a) => `'${a}'`).join(' ');
    const proc = spawn('script', ['-q', '-e', '-c', cmd, '/dev/null'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    let out = '';
    proc.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    const code = await new Promise<number | null>((res) => proc.once('exit', (c) => res(c)));
    expect(code).toBe(1);
    expect(out).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] FATAL: invalid configuration at start-up \(\d+ errors?, printed above\); not starting( \S+=\S+)*\r?$/m);
    expect(out).not.toMatch(/^\{"level"/m);
  });

  it('--http1-engine takes uws or strict; the usage shows it', async () => {
    const r = await runCli(['run', '--config', dir(GOOD), '--http1-engine', 'fast']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--http1-engine must be one of uws, strict, got "fast"');
    expect(r.stderr).toContain('[--http1-engine uws|strict]');
  });

  it('--log-format takes pretty or json; the usage shows it', async () => {
    const r = await runCli(['run', '--config', dir(GOOD), '--log-format', 'xml']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--log-format must be one of pretty, json');
    expect(r.stderr).toContain('[--log-format pretty|json]');
  });
});
