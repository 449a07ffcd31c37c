// TLS origination per DestinationRule `tls`: SIMPLE with a CA file (relative to the YAML file),
// the SNI (the request's Host, or the rule's `sni`), subjectAltNames, MUTUAL with a client
// certificate, gRPC (HTTP/2) over TLS; failures are connection failures (503 UF), and unusable
// certificate files are reported at config time. `credentialName`: the CA and client certificate
// from a Secret in the gateway's namespace (istio.io's egress TLS origination task), rotated
// without a restart, served over SDS to a `--xds-address` replica.
import * as grpc from '@grpc/grpc-js';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawService } from '../helpers/grpc.js';
import { removeDir, runCli, startGateway, tempConfigDir, type GatewayProcess } from '../helpers/gateway.js';
import { freePort, http, sleep, waitFor } from '../helpers/net.js';
import { createCa, type CertFiles, type TestCa } from '../helpers/openssl-ca.js';
import { destinationRule, dest, serviceEntry, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

let ca: TestCa;
let otherCa: TestCa;
let serverCert: CertFiles;
let clientCert: CertFiles;
let plain: HttpsServer;
let mutual: HttpsServer;
let grpcServer: grpc.Server;
let gw: GatewayProcess;
let replica: GatewayProcess;
let port: number;
let grpcPort: number;
let replicaPort: number;
let rotating: HttpsServer;
let clientB: CertFiles;

const SERVICE = rawService({ Unary: '/echo.Echo/Unary' });
const Client = grpc.makeGenericClientConstructor(SERVICE, 'Echo');

/** An HTTPS upstream that tells what it saw of the TLS connection. */
async function startHttps(name: string, opts: { requireClientCert?: boolean; closeEach?: boolean }): Promise<HttpsServer> {
  const server = createHttpsServer(
    { cert: serverCert.certPem, key: serverCert.keyPem, ca: ca.certPem, requestCert: !!opts.requireClientCert, rejectUnauthorized: !!opts.requireClientCert },
    (req, res) => {
      const s = req.socket as TLSSocket;
      const peer = s.getPeerX509Certificate();
      const answer = (): void => {
        // closeEach: every request comes on a new connection (new handshake, current client certificate).
        res.writeHead(200, { 'content-type': 'application/json', ...(opts.closeEach ? { connection: 'close' } : {}) });
        res.end(JSON.stringify({ name, servername: s.servername, host: req.headers.host, client: peer?.subject ?? null, clientSan: peer?.subjectAltName ?? null }));
      };
      // /slow answers after 2.5 s: a request in flight while the Secret changes.
      if (req.url === '/slow') setTimeout(answer, 2500);
      else answer();
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return server;
}

const portOf = (s: HttpsServer): number => (s.address() as AddressInfo).port;

function svc(name: string, upstreamPort: number, protocol = 'HTTP'): Obj[] {
  const se = serviceEntry(name, `${name}.default.svc.cluster.local`, 80, { endpoints: [{ address: '127.0.0.1', ports: { http: upstreamPort } }] });
  ((se.spec as Obj).ports as Obj[])[0]!.protocol = protocol;
  return [se];
}

const tlsRule = (name: string, tls: Obj): Obj => destinationRule(name, name, {}, { trafficPolicy: { tls } });

const b64 = (t: string): string => Buffer.from(t).toString('base64');
/** A Secret in the gateway's namespace (istio-system), as the egress TLS origination task creates it. */
function secret(name: string, data: Record<string, string>, type = 'Opaque'): Obj {
  return { apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace: 'istio-system' }, type, data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])) };
}
const rotateSecret = (client: CertFiles): string => yamlDocs(secret('rotate-cred', { 'tls.crt': client.certPem, 'tls.key': client.keyPem, 'ca.crt': ca.certPem }, 'kubernetes.io/tls'));

beforeAll(async () => {
  ca = createCa('ca');
  otherCa = createCa('other');
  serverCert = ca.issue('server', { sans: ['DNS:simple.test', 'DNS:sni.backend', 'DNS:mutual.test', 'DNS:grpcs.test', 'DNS:wrongca.test', 'DNS:san.test', 'DNS:nocert.test', 'DNS:grpcbad.test', 'DNS:credsimple.test', 'DNS:credwrong.test', 'DNS:credmutual.test', 'DNS:credrotate.test', 'IP:127.0.0.1'] });
  clientCert = ca.issue('client', { cn: 'gateway-client', sans: ['URI:spiffe://cluster.local/ns/istio-system/sa/gatehouse'], client: true });
  clientB = ca.issue('client-b', { cn: 'gateway-client-b', client: true });
  plain = await startHttps('plain', {});
  mutual = await startHttps('mutual', { requireClientCert: true });
  rotating = await startHttps('rotating', { requireClientCert: true, closeEach: true });
  grpcServer = new grpc.Server();
  grpcServer.addService(SERVICE, {
    Unary(call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) {
      const m = new grpc.Metadata();
      m.set('x-tls', 'yes');
      cb(null, Buffer.from(`tls:${call.request.toString()}`), m);
    },
  });
  const grpcUp = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ private_key: Buffer.from(serverCert.keyPem), cert_chain: Buffer.from(serverCert.certPem) }], false), (e, p) => (e ? reject(e) : resolve(p))),
  );
  port = await freePort();
  grpcPort = await freePort();
  replicaPort = await freePort();
  const xdsPort = await freePort();
  const gatewayObj: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name: 'gw', namespace: 'default' },
    spec: {
      selector: { istio: 'ingressgateway' },
      servers: [
        { port: { number: port, name: 'http', protocol: 'HTTP' }, hosts: ['*'] },
        { port: { number: grpcPort, name: 'grpc', protocol: 'GRPC' }, hosts: ['*'] },
      ],
    },
  };
  // The replica (`--labels istio=replica`) gets this Gateway only, over ADS.
  const replicaGateway: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name: 'gw-replica', namespace: 'default' },
    spec: { selector: { istio: 'replica' }, servers: [{ port: { number: replicaPort, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] },
  };
  const routes: Obj[] = [];
  for (const h of ['simple', 'sni', 'wrongca', 'mutual', 'nocert', 'san', 'grpcs', 'grpcbad', 'skip', 'credsimple', 'credwrong', 'credmutual', 'credrotate']) {
    routes.push(virtualService(h, [`${h}.test`], [{ route: [dest(h)] }], { gateways: ['gw', 'gw-replica'] }));
  }
  gw = await startGateway({
    files: {
      'ca.crt': ca.certPem,
      'other-ca.crt': otherCa.certPem,
      'client.crt': clientCert.certPem,
      'client.key': clientCert.keyPem,
      'config.yaml': yamlDocs(
        gatewayObj,
        ...svc('simple', portOf(plain)),
        tlsRule('simple', { mode: 'SIMPLE', caCertificates: 'ca.crt' }),
        ...svc('sni', portOf(plain)),
        tlsRule('sni', { mode: 'SIMPLE', caCertificates: 'ca.crt', sni: 'sni.backend' }),
        ...svc('wrongca', portOf(plain)),
        tlsRule('wrongca', { mode: 'SIMPLE', caCertificates: 'other-ca.crt' }),
        ...svc('mutual', portOf(mutual)),
        tlsRule('mutual', { mode: 'MUTUAL', caCertificates: 'ca.crt', clientCertificate: 'client.crt', privateKey: 'client.key' }),
        ...svc('nocert', portOf(mutual)),
        tlsRule('nocert', { mode: 'SIMPLE', caCertificates: 'ca.crt' }),
        ...svc('san', portOf(plain)),
        tlsRule('san', { mode: 'SIMPLE', caCertificates: 'ca.crt', subjectAltNames: ['spiffe://cluster.local/ns/x/sa/not-this-one'] }),
        ...svc('grpcs', grpcUp, 'GRPC'),
        tlsRule('grpcs', { mode: 'SIMPLE', caCertificates: 'ca.crt' }),
        ...svc('skip', portOf(plain)),
        tlsRule('skip', { mode: 'SIMPLE', caCertificates: 'other-ca.crt', insecureSkipVerify: true }),
        ...svc('grpcbad', grpcUp, 'GRPC'),
        tlsRule('grpcbad', { mode: 'SIMPLE', caCertificates: 'other-ca.crt' }),
        // credentialName: generic keys (the CA only, SIMPLE), a kubernetes.io/tls Secret (MUTUAL).
        secret('simple-cred', { cacert: ca.certPem }),
        secret('wrong-cred', { cacert: otherCa.certPem }),
        secret('mutual-cred', { 'tls.crt': clientCert.certPem, 'tls.key': clientCert.keyPem, 'ca.crt': ca.certPem }, 'kubernetes.io/tls'),
        ...svc('credsimple', portOf(plain)),
        tlsRule('credsimple', { mode: 'SIMPLE', credentialName: 'simple-cred' }),
        ...svc('credwrong', portOf(plain)),
        tlsRule('credwrong', { mode: 'SIMPLE', credentialName: 'wrong-cred' }),
        ...svc('credmutual', portOf(mutual)),
        tlsRule('credmutual', { mode: 'MUTUAL', credentialName: 'mutual-cred' }),
        ...svc('credrotate', portOf(rotating)),
        tlsRule('credrotate', { mode: 'MUTUAL', credentialName: 'rotate-cred' }),
        replicaGateway,
        ...routes,
      ),
      'rotate-secret.yaml': rotateSecret(clientCert),
    },
    args: ['--xds-port', String(xdsPort)],
  });
  replica = await startGateway({ files: {}, xdsAddress: `127.0.0.1:${xdsPort}`, args: ['--labels', 'istio=replica'], readyTimeoutMs: 15_000 });
}, 40_000);

afterAll(async () => {
  await replica?.stop();
  await gw?.stop();
  await new Promise<void>((r) => (rotating ? rotating.close(() => r()) : r()));
  await new Promise<void>((r) => (plain ? plain.close(() => r()) : r()));
  await new Promise<void>((r) => (mutual ? mutual.close(() => r()) : r()));
  grpcServer?.forceShutdown();
  ca?.remove();
  otherCa?.remove();
});

describe('TLS origination (DestinationRule tls)', () => {
  it('SIMPLE with caCertificates (a path relative to the YAML file): HTTPS to the upstream, SNI from the request Host', async () => {
    const r = await http(port, '/x', { headers: { host: 'simple.test' } });
    expect(r.status).toBe(200);
    expect(r.json.name).toBe('plain');
    expect(r.json.servername).toBe('simple.test');
    expect(r.json.host).toBe('simple.test');
  });

  it('SIMPLE with sni: the upstream sees the configured SNI', async () => {
    const r = await http(port, '/x', { headers: { host: 'sni.test' } });
    expect(r.status).toBe(200);
    expect(r.json.servername).toBe('sni.backend');
  });

  it('a certificate the CA did not sign: 503 UF, a connection failure, with the TLS error as reason', async () => {
    const r = await http(port, '/x', { headers: { host: 'wrongca.test' } });
    expect(r.status).toBe(503);
    expect(r.text).toMatch(/^upstream connect error or disconnect\/reset before headers\. reset reason: remote connection failure, transport failure reason: TLS_error/);
    const stats = (await gw.admin('/stats/prometheus')).text;
    expect(stats).toMatch(/istio_requests_total\{[^}]*destination_service="wrongca\.default\.svc\.cluster\.local"[^}]*response_code="503"[^}]*response_flags="UF,URX"/);
  });

  it('insecureSkipVerify: the certificate is not checked', async () => {
    const r = await http(port, '/x', { headers: { host: 'skip.test' } });
    expect(r.status).toBe(200);
    expect(r.json.name).toBe('plain');
  });

  it('subjectAltNames that the upstream certificate does not carry: 503 UF', async () => {
    const r = await http(port, '/x', { headers: { host: 'san.test' } });
    expect(r.status).toBe(503);
    expect(r.text).toMatch(/TLS_error/);
  });

  it('MUTUAL: the client certificate is presented to an upstream that requires one', async () => {
    const r = await http(port, '/x', { headers: { host: 'mutual.test' } });
    expect(r.status).toBe(200);
    expect(r.json.name).toBe('mutual');
    expect(r.json.client).toContain('CN=gateway-client');
    expect(r.json.clientSan).toBe('URI:spiffe://cluster.local/ns/istio-system/sa/gatehouse');
  });

  it('SIMPLE to an upstream that requires a client certificate: 503', async () => {
    const r = await http(port, '/x', { headers: { host: 'nocert.test' } });
    expect(r.status).toBe(503);
  });

  it('gRPC (HTTP/2) over TLS to a GRPC service port', async () => {
    const client = new Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'grpcs.test' }) as unknown as Record<string, (...a: unknown[]) => grpc.ClientUnaryCall>;
    try {
      const { value, trailer } = await new Promise<{ value: Buffer; trailer: grpc.Metadata }>((resolve, reject) => {
        let value: Buffer | undefined;
        const call = client.Unary!(Buffer.from('hello'), new grpc.Metadata(), {}, (err: grpc.ServiceError | null, v?: Buffer) => {
          if (err) reject(err);
          value = v;
        });
        call.on('status', (s: grpc.StatusObject) => setImmediate(() => (value ? resolve({ value, trailer: s.metadata }) : reject(new Error(s.details)))));
      });
      expect(value.toString()).toBe('tls:hello');
      expect(trailer.get('x-tls')).toEqual(['yes']);
    } finally {
      (client as unknown as grpc.Client).close();
    }
  });

  it('gRPC over TLS to an upstream whose certificate the CA did not sign: UNAVAILABLE with the TLS error', async () => {
    const client = new Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'grpcbad.test' }) as unknown as Record<string, (...a: unknown[]) => grpc.ClientUnaryCall>;
    try {
      const err = await new Promise<grpc.ServiceError | null>((resolve) => {
        client.Unary!(Buffer.from('x'), new grpc.Metadata(), {}, (e: grpc.ServiceError | null) => resolve(e));
      });
      expect(err?.code).toBe(grpc.status.UNAVAILABLE);
      expect(err?.details).toMatch(/transport failure reason: TLS_error/);
    } finally {
      (client as unknown as grpc.Client).close();
    }
  });

  it('reports unreadable or unparsable certificate files at config time (validate), naming the field', async () => {
    const dir = tempConfigDir({
      'bad.crt': 'not a certificate\n',
      'config.yaml': yamlDocs(
        ...svc('broken', 8443),
        destinationRule('broken', 'broken', {}, { trafficPolicy: { tls: { mode: 'MUTUAL', caCertificates: 'missing-ca.crt', clientCertificate: 'bad.crt', privateKey: 'missing.key' } } }),
      ),
    });
    try {
      const r = await runCli(['validate', '--labels', 'istio=ingressgateway', dir]);
      expect(r.stdout).toMatch(/config\.yaml:\d+: DestinationRule\/default\/broken: spec\.trafficPolicy\.tls\.caCertificates: warning: cannot read .*missing-ca\.crt \(ENOENT\)/);
      expect(r.stdout).toMatch(/spec\.trafficPolicy\.tls\.clientCertificate: warning: .*bad\.crt is not a PEM certificate/);
      expect(r.stdout).toMatch(/spec\.trafficPolicy\.tls\.privateKey: warning: cannot read .*missing\.key/);
      expect(r.stdout).not.toMatch(/TLS origination is not implemented/);
    } finally {
      removeDir(dir);
    }
  });
});

describe('TLS origination from a Secret (DestinationRule tls.credentialName)', () => {
  it('SIMPLE: the upstream is verified with the CA of the Secret (generic cacert key)', async () => {
    const r = await http(port, '/x', { headers: { host: 'credsimple.test' } });
    expect(r.status).toBe(200);
    expect(r.json.name).toBe('plain');
    expect(r.json.servername).toBe('credsimple.test');
    expect(r.json.client).toBeNull();
  });

  it('SIMPLE with a Secret holding another CA: 503 UF (TLS_error)', async () => {
    const r = await http(port, '/x', { headers: { host: 'credwrong.test' } });
    expect(r.status).toBe(503);
    expect(r.text).toMatch(/reset reason: remote connection failure, transport failure reason: TLS_error/);
  });

  it("MUTUAL: the Secret's client certificate is presented to an upstream that requires one", async () => {
    const r = await http(port, '/x', { headers: { host: 'credmutual.test' } });
    expect(r.status).toBe(200);
    expect(r.json.name).toBe('mutual');
    expect(r.json.client).toContain('CN=gateway-client');
  });

  it('config_dump shows the cluster naming SDS kubernetes://<name> and kubernetes://<name>-cacert, and the secrets without private keys', async () => {
    const dump = (await gw.admin('/config_dump')).text;
    expect(dump).toContain('"kubernetes://mutual-cred"');
    expect(dump).toContain('"kubernetes://mutual-cred-cacert"');
    expect(dump).not.toContain(clientCert.keyPem.split('\n')[1]!);
  });

  it('a replica (--xds-address) gets the Secret over SDS, inlined, and presents the client certificate', async () => {
    const r = await http(replicaPort, '/x', { headers: { host: 'credmutual.test' } });
    expect(r.status).toBe(200);
    expect(r.json.client).toContain('CN=gateway-client');
    const s = await http(replicaPort, '/x', { headers: { host: 'credsimple.test' } });
    expect(s.status).toBe(200);
  });

  it('a rewritten Secret: new upstream connections present the new client certificate without a restart; a request in flight completes', async () => {
    const before = await http(port, '/x', { headers: { host: 'credrotate.test' } });
    expect(before.status).toBe(200);
    expect(before.json.client).toMatch(/CN=gateway-client$/);
    const pid = gw.proc.pid;
    const inFlight = http(port, '/slow', { headers: { host: 'credrotate.test' }, timeoutMs: 8000 });
    await sleep(300);
    gw.writeFile('rotate-secret.yaml', rotateSecret(clientB));
    await waitFor(async () => {
      const r = await http(port, '/x', { headers: { host: 'credrotate.test' } });
      return r.status === 200 && String(r.json.client).includes('CN=gateway-client-b');
    }, 5000);
    const slow = await inFlight;
    expect(slow.status).toBe(200);
    expect(slow.json.client).toMatch(/CN=gateway-client$/);
    expect(gw.proc.pid).toBe(pid);
    expect(gw.proc.exitCode).toBeNull();
  });

  it('validate: a missing Secret and one without the keys are warned; credentialName beside certificate files is an error, as in Istio', async () => {
    const dir = tempConfigDir({
      'config.yaml': yamlDocs(
        ...svc('a', 8443),
        destinationRule('a', 'a', {}, { trafficPolicy: { tls: { mode: 'SIMPLE', credentialName: 'nowhere' } } }),
        ...svc('b', 8443),
        destinationRule('b', 'b', {}, { trafficPolicy: { tls: { mode: 'MUTUAL', credentialName: 'ca-only' } } }),
        secret('ca-only', { cacert: 'x' }),
        ...svc('c', 8443),
        destinationRule('c', 'c', {}, { trafficPolicy: { tls: { mode: 'MUTUAL', credentialName: 'ca-only', caCertificates: '/etc/ca.pem', clientCertificate: '/etc/c.pem' } } }),
      ),
    });
    try {
      const r = await runCli(['validate', '--labels', 'istio=ingressgateway', dir]);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/config\.yaml:\d+: DestinationRule\/default\/a: spec\.trafficPolicy\.tls\.credentialName: warning: secret "nowhere" not found in namespace istio-system/);
      expect(r.stdout).toMatch(/DestinationRule\/default\/b: spec\.trafficPolicy\.tls\.credentialName: warning: secret "ca-only" has no cert and key \(or tls\.crt and tls\.key\)/);
      expect(r.stdout).toMatch(/DestinationRule\/default\/b: spec\.trafficPolicy\.tls\.credentialName: secret "ca-only" cacert holds no PEM certificate/);
      expect(r.stdout).toMatch(/DestinationRule\/default\/c: spec\.trafficPolicy\.tls\.credentialName: cannot specify client certificates or CA certificate or CA CRL if credentialName is set \(clientCertificate, caCertificates\)/);
      expect(r.stdout).not.toMatch(/not supported for TLS origination yet/);
    } finally {
      removeDir(dir);
    }
  });
});
