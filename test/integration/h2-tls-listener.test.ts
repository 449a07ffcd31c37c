// The node:http2 engine with TLS, in process (what the HTTPS servers that uWS cannot serve run
// on): ALPN h2 and http/1.1 on one port, a required client certificate whose SPIFFE SAN the
// request lifecycle can read, and certificate rotation for new handshakes only.
import http2 from 'node:http2';
import https from 'node:https';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RouteConfiguration } from '../../src/controlplane/snapshot.js';
import { NodeListener } from '../../src/ingress/node-listener.js';
import type { DataPlaneContext } from '../../src/ingress/exchange.js';
import { RouteTable } from '../../src/routing/route-table.js';
import { IstioMetrics } from '../../src/telemetry/metrics.js';
import { ClusterManager } from '../../src/upstream/cluster-manager.js';
import { createCa, type CertFiles, type TestCa } from '../helpers/openssl-ca.js';

const ROUTES: RouteConfiguration = {
  name: 'https.0',
  validate_clusters: false,
  virtual_hosts: [
    {
      name: 'secure.test:443',
      domains: ['secure.test', 'secure.test:*'],
      include_request_attempt_count: true,
      routes: [
        {
          name: 'hello',
          match: { prefix: '/', case_sensitive: true, headers: [], query_parameters: [] },
          direct_response: { status: 200, body: { inline_string: 'hello over tls' } },
          metadata: { filter_metadata: { istio: { config: '' } } },
        },
      ],
    },
  ],
};

let ca: TestCa;
let first: CertFiles;
let second: CertFiles;
let client: CertFiles;
let listener: NodeListener;
let port: number;
/** What the lifecycle saw of each request's client. */
const seen: Array<{ protocol: string | undefined; spiffe: string | undefined; subject: string | undefined }> = [];

beforeAll(async () => {
  ca = createCa('edge');
  first = ca.issue('first', { cn: 'first', sans: ['DNS:secure.test'] });
  second = ca.issue('second', { cn: 'second', sans: ['DNS:secure.test'] });
  client = ca.issue('client', { cn: 'client', sans: ['URI:spiffe://cluster.local/ns/default/sa/frontend'], client: true });
  const metrics = new IstioMetrics({ labels: {}, namespace: 'istio-system' });
  const accessLog = {
    log(r: { sink: { protocol?: string; peerSpiffeId?: string; peerCertificate?: { subject: string } } }) {
      seen.push({ protocol: r.sink.protocol, spiffe: r.sink.peerSpiffeId, subject: r.sink.peerCertificate?.subject });
    },
    close() {},
  };
  const ctx = { clusters: new ClusterManager().current, metrics, accessLog, table: new RouteTable(ROUTES) } as unknown as DataPlaneContext;
  listener = new NodeListener(
    { bind: '127.0.0.1', port: 0, routeName: 'https.0', tls: { cert: first.certPem, key: first.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' } },
    ctx,
  );
  await listener.listen();
  port = listener.boundPort;
});

afterAll(async () => {
  await listener?.close(0);
  ca?.remove();
});

function h2get(): Promise<{ status: number; body: string; alpn: string | boolean; peerCn: string }> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.certPem, cert: client.certPem, key: client.keyPem, servername: 'secure.test' });
    s.on('error', reject);
    const req = s.request({ ':path': '/', ':authority': 'secure.test' });
    let body = '';
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (d: Buffer) => (body += d));
    req.on('end', () => {
      const sock = s.socket as unknown as tls.TLSSocket;
      const out = { status, body, alpn: s.alpnProtocol ?? false, peerCn: sock.getPeerCertificate().subject.CN as string };
      s.close();
      resolve(out);
    });
    req.on('error', reject);
  });
}

describe('node:http2 engine with TLS', () => {
  it('serves h2 by ALPN and exposes the client certificate and its SPIFFE id to the lifecycle', async () => {
    const r = await h2get();
    expect(r.alpn).toBe('h2');
    expect(r.status).toBe(200);
    expect(r.body).toBe('hello over tls');
    expect(seen.at(-1)).toEqual({ protocol: 'HTTP/2', spiffe: 'spiffe://cluster.local/ns/default/sa/frontend', subject: 'CN=client' });
  });

  it('serves HTTP/1.1 clients on the same port', async () => {
    const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port, path: '/', headers: { host: 'secure.test' }, ca: ca.certPem, cert: client.certPem, key: client.keyPem, servername: 'secure.test', agent: false }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        })
        .on('error', reject);
    });
    expect(r).toEqual({ status: 200, body: 'hello over tls' });
    expect(seen.at(-1)?.protocol).toBe('HTTP/1.1');
    expect(seen.at(-1)?.spiffe).toBe('spiffe://cluster.local/ns/default/sa/frontend');
  });

  it('refuses a client without a certificate when one is required', async () => {
    const err = await new Promise<Error>((resolve) => {
      const s = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.certPem, servername: 'secure.test' });
      s.on('error', resolve);
      const req = s.request({ ':path': '/', ':authority': 'secure.test' });
      req.on('error', resolve);
      req.on('response', () => resolve(new Error('answered')));
    });
    expect(err.message).not.toBe('answered');
  });

  it('rotates the certificate for new handshakes (updateTls)', async () => {
    expect((await h2get()).peerCn).toBe('first');
    listener.updateTls({ cert: second.certPem, key: second.keyPem, ca: ca.certPem });
    expect((await h2get()).peerCn).toBe('second');
  });
});
