// Gateway TLS as Istio serves it: ALPN h2 and http/1.1 by default (narrowed by annotation),
// SIMPLE servers by SNI (exact, wildcard, default certificate),
// certificates from files (relative to the YAML file) and credentialName Secrets, MUTUAL and
// OPTIONAL_MUTUAL client certificates with subjectAltNames, minProtocolVersion, rotation of
// files and Secrets under traffic, bad replacements kept out, and `validate` on bad certificates.
// Real handshakes on 127.0.0.1; certificates made with the openssl command line.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Agent, request, type RequestOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type ConnectionOptions, type PeerCertificate } from 'node:tls';
import { connect as h2connect } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, runCli, startGateway, tempConfigDir, type GatewayProcess } from '../helpers/gateway.js';
import { freePorts, http, waitFor } from '../helpers/net.js';
import { createCa, type CertFiles, type TestCa } from '../helpers/openssl-ca.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { service, yamlDocs, type Obj } from '../helpers/yaml.js';

const SPIFFE_CLIENT = 'spiffe://cluster.local/ns/default/sa/client';

let ca: TestCa;
let otherCa: TestCa;
let certs: Record<string, CertFiles>;
let echo: Echo;
let gw: GatewayProcess;
let P: { simple: number; http: number; mutual: number; optional: number; tls13: number; h1: number };

const b64 = (s: string): string => Buffer.from(s).toString('base64');

function tlsSecret(name: string, namespace: string, c: CertFiles): Obj {
  return { apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace }, type: 'kubernetes.io/tls', data: { 'tls.crt': b64(c.certPem), 'tls.key': b64(c.keyPem) } };
}
function genericSecret(name: string, namespace: string, c: CertFiles): Obj {
  return { apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace }, type: 'Opaque', stringData: { cert: c.certPem, key: c.keyPem } };
}

function gatewayDoc(): Obj {
  const https = (port: number, name: string, hosts: string[], tls: Obj): Obj => ({ port: { number: port, name, protocol: 'HTTPS' }, hosts, tls });
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name: 'gw', namespace: 'default' },
    spec: {
      selector: { istio: 'ingressgateway' },
      servers: [
        // The first server's certificate is the default (clients without SNI); relative paths.
        https(P.simple, 'https-a', ['a.test'], { mode: 'SIMPLE', serverCertificate: 'a.crt', privateKey: 'a.key' }),
        https(P.simple, 'https-wild', ['*.wild.test'], { mode: 'SIMPLE', credentialName: 'wild-tls' }),
        https(P.simple, 'https-b', ['b.test'], { mode: 'SIMPLE', credentialName: 'b-generic' }),
        { port: { number: P.http, name: 'http', protocol: 'HTTP' }, hosts: ['*'], tls: { httpsRedirect: true } },
        https(P.mutual, 'https-m', ['m.test'], { mode: 'MUTUAL', serverCertificate: 'm.crt', privateKey: 'm.key', caCertificates: 'ca.crt', subjectAltNames: [SPIFFE_CLIENT] }),
        https(P.optional, 'https-o', ['o.test'], { mode: 'OPTIONAL_MUTUAL', credentialName: 'o-cred' }),
        https(P.tls13, 'https-v', ['v.test'], { mode: 'SIMPLE', serverCertificate: 'v.crt', privateKey: 'v.key', minProtocolVersion: 'TLSV1_3' }),
      ],
    },
  };
}

/** The same SIMPLE server in a Gateway narrowed to HTTP/1.1 by the gatehouse.io/alpn annotation. */
function h1GatewayDoc(): Obj {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name: 'gw-h1', namespace: 'default', annotations: { 'gatehouse.io/alpn': 'http/1.1' } },
    spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: P.h1, name: 'https-h1', protocol: 'HTTPS' }, hosts: ['a.test'], tls: { mode: 'SIMPLE', serverCertificate: 'a.crt', privateKey: 'a.key' } }] },
  };
}

function config(b: CertFiles = certs.b!): string {
  const oSecret = { ...tlsSecret('o-cred', 'istio-system', certs.o!), data: { 'tls.crt': b64(certs.o!.certPem), 'tls.key': b64(certs.o!.keyPem), 'ca.crt': b64(ca.certPem) } };
  return yamlDocs(
    gatewayDoc(),
    h1GatewayDoc(),
    tlsSecret('wild-tls', 'istio-system', certs.wild!),
    // Found in the Gateway's namespace (the gateway's own, istio-system, has none).
    genericSecret('b-generic', 'default', b),
    oSecret,
    ...service('tlsecho', { v1: echo.port }),
    { apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'vs', namespace: 'default' }, spec: { hosts: ['*'], gateways: ['gw', 'gw-h1'], http: [{ route: [{ destination: { host: 'tlsecho' } }] }] } },
  );
}

beforeAll(async () => {
  ca = createCa('ca');
  otherCa = createCa('other', ca.dir);
  certs = {
    a: ca.issue('a', { sans: ['DNS:a.test'] }),
    a2: ca.issue('a2', { cn: 'a-rotated', sans: ['DNS:a.test'] }),
    wild: ca.issue('wild', { sans: ['DNS:*.wild.test'] }),
    b: ca.issue('b', { sans: ['DNS:b.test'] }),
    b2: ca.issue('b2', { cn: 'b-rotated', sans: ['DNS:b.test'] }),
    m: ca.issue('m', { sans: ['DNS:m.test'] }),
    o: ca.issue('o', { sans: ['DNS:o.test'] }),
    v: ca.issue('v', { sans: ['DNS:v.test'] }),
    client: ca.issue('client', { client: true, sans: [`URI:${SPIFFE_CLIENT}`] }),
    otherSan: ca.issue('client-other', { client: true, sans: ['URI:spiffe://cluster.local/ns/default/sa/other'] }),
    wrongCa: otherCa.issue('client-wrong-ca', { client: true, sans: [`URI:${SPIFFE_CLIENT}`] }),
  };
  echo = await startEcho('tlsecho');
  const [simple, httpPort, mutual, optional, tls13, h1] = await freePorts(6);
  P = { simple: simple!, http: httpPort!, mutual: mutual!, optional: optional!, tls13: tls13!, h1: h1! };
  gw = await startGateway({
    files: {
      'gw.yaml': config(),
      'a.crt': certs.a!.certPem,
      'a.key': certs.a!.keyPem,
      'm.crt': certs.m!.certPem,
      'm.key': certs.m!.keyPem,
      'v.crt': certs.v!.certPem,
      'v.key': certs.v!.keyPem,
      'ca.crt': ca.certPem,
    },
  });
});

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
  ca?.remove();
});

/** A TLS handshake; resolves with the certificate the client was shown. */
function handshake(port: number, servername: string | undefined, opts: ConnectionOptions = {}): Promise<{ cert: PeerCertificate; protocol: string | null }> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ...(servername ? { servername } : {}), rejectUnauthorized: false, ...opts }, () => {
      const cert = s.getPeerCertificate();
      const protocol = s.getProtocol();
      s.end();
      resolve({ cert, protocol });
    });
    s.on('error', reject);
    s.setTimeout(3000, () => s.destroy(new Error('handshake timed out')));
  });
}

interface Reply {
  status: number;
  body: string;
  localPort: number;
}

/** An HTTPS request by SNI name (Host = the name unless given). */
function get(port: number, servername: string, opts: Omit<Partial<RequestOptions>, 'path'> & { path?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, servername, path: opts.path ?? '/', headers: { host: servername }, rejectUnauthorized: false, agent: false, timeout: 3000, ...opts },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, localPort: res.socket?.localPort ?? 0 }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

const cn = (c: PeerCertificate): string | undefined => (c.subject as unknown as Record<string, string> | undefined)?.CN;

/** One request with an HTTP/2 client over TLS (as `curl --http2 https://...`): the protocol it got and the answer. */
function h2get(port: number, servername: string, path: string): Promise<{ alpn: string | false; status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const session = h2connect(`https://127.0.0.1:${port}`, { servername, ca: ca.certPem, ALPNProtocols: ['h2', 'http/1.1'] });
    session.on('error', reject);
    const req = session.request({ ':path': path, ':authority': servername });
    let body = '';
    let status = 0;
    req.setEncoding('utf8');
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      const alpn = session.alpnProtocol ?? false;
      session.close();
      resolve({ alpn, status, body });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('ALPN: h2 and http/1.1 by default, as Istio; gatehouse.io/alpn narrows it', () => {
  it('an HTTPS server without the annotation offers h2: an HTTP/2 client gets h2 and is routed (node:http2 engine)', async () => {
    const r = await h2get(P.simple, 'a.test', '/over-h2');
    expect(r.alpn).toBe('h2');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).url).toBe('/over-h2');
    expect((await gw.admin('/listeners')).text).toContain(`127.0.0.1:${P.simple}::HTTPS (HTTP/1.1, h2)::`);
  });

  it('HTTP/1.1 clients are served on the same port', async () => {
    const { protocol } = await handshake(P.simple, 'a.test', { ALPNProtocols: ['http/1.1'] });
    expect(protocol).toMatch(/^TLSv1\.[23]$/);
    expect((await get(P.simple, 'a.test', { path: '/h1' })).status).toBe(200);
  });

  it('gatehouse.io/alpn: "http/1.1": no h2 is negotiated, the client speaks HTTP/1.1 (uWS engine)', async () => {
    const alpn = await new Promise<string | false>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: P.h1, servername: 'a.test', ca: ca.certPem, ALPNProtocols: ['h2', 'http/1.1'] }, () => {
        resolve(s.alpnProtocol ?? false);
        s.end();
      });
      s.on('error', reject);
    });
    expect(alpn).not.toBe('h2');
    const r = await get(P.h1, 'a.test', { path: '/narrowed' });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).url).toBe('/narrowed');
    expect((await gw.admin('/listeners')).text).toContain(`127.0.0.1:${P.h1}::HTTPS (HTTP/1.1)::`);
  });
});

describe('SIMPLE servers on one port: the certificate by SNI', () => {
  it('picks the certificate of the server naming the SNI host (file certificate, relative path)', async () => {
    const { cert } = await handshake(P.simple, 'a.test');
    expect(cn(cert)).toBe('a');
    expect(cert.subjectaltname).toBe('DNS:a.test');
  });

  it('a wildcard server matches one label and, as Envoy, several', async () => {
    expect((await handshake(P.simple, 'x.wild.test')).cert.subjectaltname).toBe('DNS:*.wild.test');
    expect((await handshake(P.simple, 'deep.x.wild.test')).cert.subjectaltname).toBe('DNS:*.wild.test');
  });

  it('a client without SNI gets the default certificate (the first server)', async () => {
    expect(cn((await handshake(P.simple, undefined)).cert)).toBe('a');
  });

  it('credentialName: a kubernetes.io/tls Secret in the gateway namespace and a generic one in the Gateway namespace', async () => {
    expect(cn((await handshake(P.simple, 'x.wild.test')).cert)).toBe('wild');
    expect(cn((await handshake(P.simple, 'b.test')).cert)).toBe('b');
  });

  it('the handshake verifies against the CA for the name asked for', async () => {
    const { cert } = await handshake(P.simple, 'b.test', { rejectUnauthorized: true, ca: ca.certPem });
    expect(cn(cert)).toBe('b');
  });

  it('routes HTTPS requests by Host, with x-forwarded-proto https', async () => {
    const r = await get(P.simple, 'b.test', { path: '/hello?x=1' });
    expect(r.status).toBe(200);
    const up = JSON.parse(r.body) as { url: string; headers: Record<string, string> };
    expect(up.url).toBe('/hello?x=1');
    expect(up.headers['x-forwarded-proto']).toBe('https');
    expect(up.headers.host).toBe('b.test');
  });

  it('httpsRedirect on the HTTP server still answers 301 to https', async () => {
    const r = await http(P.http, '/path', { headers: { host: 'a.test' } });
    expect(r.status).toBe(301);
    expect(r.headers.location).toMatch(/^https:\/\/a\.test(:443)?\/path$/);
  });

  it('config_dump lists the secrets without private keys', async () => {
    const r = await gw.admin('/config_dump');
    const dump = r.json.configs.find((c: { '@type': string }) => c['@type'].endsWith('SecretsConfigDump'));
    const names = dump.dynamic_active_secrets.map((s: { name: string }) => s.name);
    expect(names).toContain('kubernetes://wild-tls');
    expect(names).toContain('kubernetes://default/b-generic');
    expect(names).toContain('kubernetes://o-cred-cacert');
    expect(names.some((n: string) => n.startsWith('file-cert:') && n.endsWith('/a.crt~' + join(gw.dir, 'a.key')))).toBe(true);
    expect(r.text).not.toContain('PRIVATE KEY');
    expect(r.text).toContain('[redacted]');
  });

  it('reports each certificate expiry as a metric', async () => {
    const r = await gw.admin('/stats/prometheus');
    expect(r.text).toMatch(/gatehouse_certificate_expiry_timestamp_seconds\{secret="kubernetes:\/\/wild-tls"\} \d{10}/);
  });
});

describe('MUTUAL and OPTIONAL_MUTUAL (node:http2 engine)', () => {
  const withCert = (c: CertFiles): Omit<Partial<RequestOptions>, 'path'> => ({ cert: c.certPem, key: c.keyPem });

  it('MUTUAL refuses a client without a certificate', async () => {
    await expect(get(P.mutual, 'm.test')).rejects.toThrow();
  });

  it('MUTUAL accepts a client certificate signed by the CA with an accepted SAN', async () => {
    const r = await get(P.mutual, 'm.test', withCert(certs.client!));
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).headers['x-forwarded-proto']).toBe('https');
  });

  it('MUTUAL refuses a certificate from another CA', async () => {
    await expect(get(P.mutual, 'm.test', withCert(certs.wrongCa!))).rejects.toThrow();
  });

  it('MUTUAL refuses a certificate whose SANs are not in subjectAltNames', async () => {
    await expect(get(P.mutual, 'm.test', withCert(certs.otherSan!))).rejects.toThrow();
  });

  it('OPTIONAL_MUTUAL accepts a client without a certificate, and one with a valid certificate', async () => {
    expect((await get(P.optional, 'o.test')).status).toBe(200);
    expect((await get(P.optional, 'o.test', withCert(certs.client!))).status).toBe(200);
  });

  it('OPTIONAL_MUTUAL refuses a certificate that does not verify', async () => {
    await expect(get(P.optional, 'o.test', withCert(certs.wrongCa!))).rejects.toThrow();
  });

  it('minProtocolVersion TLSV1_3 refuses a TLS 1.2 client and serves TLS 1.3', async () => {
    await expect(handshake(P.tls13, 'v.test', { maxVersion: 'TLSv1.2' })).rejects.toThrow();
    expect((await handshake(P.tls13, 'v.test')).protocol).toBe('TLSv1.3');
  });
});

describe('rotation without a restart', () => {
  it('replaced certificate files serve new handshakes; an open keep-alive connection keeps working', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await get(P.simple, 'a.test', { agent });
      expect(first.status).toBe(200);
      // Both files replaced atomically, one right after the other (as a cert-manager sync would).
      writeFileSync(join(gw.dir, '.a.crt.new'), certs.a2!.certPem);
      writeFileSync(join(gw.dir, '.a.key.new'), certs.a2!.keyPem);
      renameSync(join(gw.dir, '.a.crt.new'), join(gw.dir, 'a.crt'));
      renameSync(join(gw.dir, '.a.key.new'), join(gw.dir, 'a.key'));
      await waitFor(async () => cn((await handshake(P.simple, 'a.test')).cert) === 'a-rotated', 5000);
      // Clients without SNI get the new default too.
      expect(cn((await handshake(P.simple, undefined)).cert)).toBe('a-rotated');
      const again = await get(P.simple, 'a.test', { agent });
      expect(again.status).toBe(200);
      expect(again.localPort).toBe(first.localPort);
    } finally {
      agent.destroy();
    }
  });

  it('a changed Secret serves new handshakes', async () => {
    gw.writeFile('gw.yaml', config(certs.b2!));
    await waitFor(async () => cn((await handshake(P.simple, 'b.test')).cert) === 'b-rotated', 5000);
    expect((await get(P.simple, 'b.test')).status).toBe(200);
  });

  it('a certificate that does not match its key is rejected with a clear log line; the old one keeps serving', async () => {
    const before = gw.logs().length;
    writeFileSync(join(gw.dir, '.a.crt.new'), certs.b!.certPem);
    renameSync(join(gw.dir, '.a.crt.new'), join(gw.dir, 'a.crt'));
    await waitFor(() => gw.logs().slice(before).includes('does not match'), 5000);
    const line = gw.logs().slice(before).split('\n').find((l) => l.includes('does not match'))!;
    expect(line).toContain('Gateway/default/gw: spec.servers[0].tls.serverCertificate: certificate ');
    expect(line).toContain(`${join(gw.dir, 'a.crt')} does not match private key ${join(gw.dir, 'a.key')}`);
    expect(cn((await handshake(P.simple, 'a.test')).cert)).toBe('a-rotated');
    expect((await get(P.simple, 'a.test')).status).toBe(200);
    // Put the matching certificate back: the configuration is valid again.
    writeFileSync(join(gw.dir, '.a.crt.new'), certs.a2!.certPem);
    renameSync(join(gw.dir, '.a.crt.new'), join(gw.dir, 'a.crt'));
  });
});

/** A certificate whose validity ended in 2020 (openssl ca with explicit dates). */
function expiredCert(dir: string): CertFiles {
  const run = (args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '1000\n');
  writeFileSync(join(dir, 'ca.cnf'), `[ca]\ndefault_ca = my\n[my]\ndir = .\ndatabase = ./index.txt\nnew_certs_dir = .\nserial = ./serial\ndefault_md = sha256\npolicy = pol\n[pol]\ncommonName = supplied\n`);
  run(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=old.test', '-keyout', 'old.key', '-out', 'old.csr']);
  run(['ca', '-batch', '-config', 'ca.cnf', '-selfsign', '-keyfile', 'old.key', '-in', 'old.csr', '-startdate', '20200101000000Z', '-enddate', '20200201000000Z', '-out', 'old.crt']);
  return { cert: join(dir, 'old.crt'), key: join(dir, 'old.key'), certPem: readFileSync(join(dir, 'old.crt'), 'utf8'), keyPem: readFileSync(join(dir, 'old.key'), 'utf8') };
}

describe('gatehouse validate: certificates', () => {
  it('reports unreadable, mismatched and expired certificates, a CA that does not parse, and a bad Secret, naming the field', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'gatehouse-oldcert-'));
    const old = expiredCert(tmp);
    const server = (i: number, tls: Obj): Obj => ({ port: { number: 9443, name: `https-${i}`, protocol: 'HTTPS' }, hosts: [`h${i}.test`], tls });
    const dir = tempConfigDir({
      'a.crt': certs.a!.certPem,
      'a.key': certs.a!.keyPem,
      'b.key': certs.b!.keyPem,
      'not-a-ca.pem': 'hello\n',
      'gw.yaml': yamlDocs(
        {
          apiVersion: 'networking.istio.io/v1',
          kind: 'Gateway',
          metadata: { name: 'bad', namespace: 'default' },
          spec: {
            servers: [
              server(0, { mode: 'SIMPLE', serverCertificate: 'a.crt', privateKey: 'missing.key' }),
              server(1, { mode: 'SIMPLE', serverCertificate: 'a.crt', privateKey: 'b.key' }),
              server(2, { mode: 'SIMPLE', serverCertificate: old.cert, privateKey: old.key }),
              server(3, { mode: 'MUTUAL', serverCertificate: 'a.crt', privateKey: 'a.key', caCertificates: 'not-a-ca.pem' }),
              server(4, { mode: 'SIMPLE', credentialName: 'mixed' }),
            ],
          },
        },
        { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'mixed', namespace: 'default' }, type: 'kubernetes.io/tls', stringData: { 'tls.crt': certs.a!.certPem, 'tls.key': certs.b!.keyPem } },
      ),
    });
    try {
      const r = await runCli(['validate', dir]);
      expect(r.code).toBe(1);
      const lines = r.stdout.trim().split('\n');
      const f = join(dir, 'gw.yaml');
      const has = (re: RegExp): void => expect(lines.some((l) => re.test(l)), `${re} in\n${r.stdout}`).toBe(true);
      has(new RegExp(`^${f}:\\d+: Gateway/default/bad: spec\\.servers\\[0\\]\\.tls\\.privateKey: cannot read private key .*missing\\.key: no such file$`));
      has(/spec\.servers\[1\]\.tls\.serverCertificate: certificate .*a\.crt does not match private key .*b\.key$/);
      has(/spec\.servers\[2\]\.tls\.serverCertificate: certificate .*old\.crt expired on 2020-02-01T00:00:00\.000Z/);
      has(/spec\.servers\[3\]\.tls\.caCertificates: CA certificates .*not-a-ca\.pem holds no PEM certificate$/);
      has(/Gateway\/default\/bad: spec\.servers\[4\]\.tls\.credentialName: secret "mixed" tls\.crt does not match tls\.key$/);
    } finally {
      removeDir(dir);
      removeDir(tmp);
    }
  });
});
