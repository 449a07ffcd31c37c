// The ClientHello reader behind TLS passthrough (Envoy's tls_inspector role): the SNI of real
// hellos (Node's TLS client), hellos split across TCP segments and across TLS records, and
// everything a hostile or broken client can send: truncation, oversize, no SNI, garbage.
import { createServer, type AddressInfo } from 'node:net';
import { connect } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { MAX_CLIENT_HELLO_BYTES, parseClientHello } from '../../src/l4/clienthello.js';
import { SniChains } from '../../src/l4/tls-passthrough.js';
import type { FilterChain } from '../../src/controlplane/snapshot.js';

/** The first bytes Node's TLS client sends with these options (captured on loopback). */
function captureHello(servername: string | undefined): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const srv = createServer((sock) => {
      const chunks: Buffer[] = [];
      sock.on('data', (d) => {
        chunks.push(d);
        const all = Buffer.concat(chunks);
        if (all.length >= 5 && all.length >= 5 + all.readUInt16BE(3)) {
          sock.destroy();
          srv.close();
          resolve(all);
        }
      });
    });
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      const c = connect({ host: '127.0.0.1', port, ...(servername !== undefined ? { servername } : {}), rejectUnauthorized: false, ALPNProtocols: ['h2', 'http/1.1'] });
      c.on('error', () => undefined);
    });
    setTimeout(() => reject(new Error('no ClientHello captured')), 3000).unref();
  });
}

const u16 = (n: number): number[] => [(n >> 8) & 0xff, n & 0xff];
const u24 = (n: number): number[] => [(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];

/** A minimal ClientHello body with these extensions (type, data) pairs. */
function helloBody(exts: Array<[number, number[]]> | null): number[] {
  const body = [3, 3, ...new Array(32).fill(7), 0, ...u16(2), 0x13, 0x01, 1, 0];
  if (exts === null) return body;
  const e = exts.flatMap(([t, d]) => [...u16(t), ...u16(d.length), ...d]);
  return [...body, ...u16(e.length), ...e];
}
function sniExt(...names: string[]): [number, number[]] {
  const list = names.flatMap((n) => [0, ...u16(n.length), ...Buffer.from(n, 'latin1')]);
  return [0, [...u16(list.length), ...list]];
}
/** Handshake message bytes split into records of at most `recordSize` payload bytes. */
function records(body: number[], recordSize = 16384): Buffer {
  const hs = [1, ...u24(body.length), ...body];
  const out: number[] = [];
  for (let i = 0; i < hs.length; i += recordSize) {
    const frag = hs.slice(i, i + recordSize);
    out.push(22, 3, 1, ...u16(frag.length), ...frag);
  }
  return Buffer.from(out);
}

describe('ClientHello parser', () => {
  it('reads the SNI and ALPN of a real TLS client hello', async () => {
    const hello = await captureHello('Echo.Example.COM');
    const r = parseClientHello(hello);
    expect(r).toMatchObject({ status: 'ok', sni: 'echo.example.com', alpn: ['h2', 'http/1.1'], bytes: hello.length });
  });

  it('a hello fragmented across TCP segments is incomplete until its last byte', async () => {
    const hello = await captureHello('a.test');
    for (const cut of [0, 1, 4, 5, 6, 9, 43, hello.length - 1]) expect(parseClientHello(hello.subarray(0, cut)).status, `cut at ${cut}`).toBe('incomplete');
    expect(parseClientHello(hello)).toMatchObject({ status: 'ok', sni: 'a.test' });
  });

  it('a hello split across several TLS records is reassembled', () => {
    const body = helloBody([sniExt('split.example.com')]);
    const buf = records(body, 20);
    expect(buf.length).toBeGreaterThan(5 * 4);
    expect(parseClientHello(buf)).toMatchObject({ status: 'ok', sni: 'split.example.com', bytes: buf.length });
    for (const cut of [7, 25, 26, buf.length - 1]) expect(parseClientHello(buf.subarray(0, cut)).status).toBe('incomplete');
  });

  it('no server_name extension, or a hello with no extensions at all: ok, sni null', async () => {
    expect(parseClientHello(records(helloBody([[16, [...u16(3), 2, 0x68, 0x32]]])))).toMatchObject({ status: 'ok', sni: null, alpn: ['h2'] });
    expect(parseClientHello(records(helloBody(null)))).toMatchObject({ status: 'ok', sni: null });
    // Node sends no SNI for an IP address.
    expect(parseClientHello(await captureHello(undefined))).toMatchObject({ status: 'ok', sni: null });
  });

  it('truncated lengths inside the hello are malformed, not read past', () => {
    const good = helloBody([sniExt('a.test')]);
    // The extension block claims more than the message holds.
    const lying = [...good];
    const extLenAt = 2 + 32 + 1 + 2 + 2 + 2;
    lying[extLenAt] = 0x10;
    expect(parseClientHello(records(lying))).toMatchObject({ status: 'error', reason: 'malformed' });
    // A server_name entry whose length runs past its list.
    const sni = sniExt('abc.test');
    sni[1][4] = 50;
    expect(parseClientHello(records(helloBody([sni])))).toMatchObject({ status: 'error', reason: 'malformed' });
    // Cipher suites of odd length; a session id over 32 bytes.
    const odd = helloBody([]);
    odd[2 + 32 + 1 + 1] = 3;
    expect(parseClientHello(records(odd))).toMatchObject({ status: 'error', reason: 'malformed' });
    const sid = helloBody([]);
    sid[2 + 32] = 33;
    expect(parseClientHello(records(sid))).toMatchObject({ status: 'error', reason: 'malformed' });
    // Duplicate extensions, two host names, bad characters.
    expect(parseClientHello(records(helloBody([sniExt('a.test'), sniExt('b.test')])))).toMatchObject({ status: 'error', reason: 'malformed' });
    expect(parseClientHello(records(helloBody([sniExt('a.test', 'b.test')])))).toMatchObject({ status: 'error', reason: 'malformed' });
    expect(parseClientHello(records(helloBody([sniExt('a b.test')])))).toMatchObject({ status: 'error', reason: 'malformed' });
    expect(parseClientHello(records(helloBody([sniExt('a..test')])))).toMatchObject({ status: 'error', reason: 'malformed' });
  });

  it('oversized: a hello announcing more than 16 KiB is refused before it arrives', () => {
    const head = Buffer.from([22, 3, 1, ...u16(16384), 1, ...u24(MAX_CLIENT_HELLO_BYTES)]);
    expect(parseClientHello(head)).toMatchObject({ status: 'error', reason: 'too_large' });
    const big = helloBody([[0xfe00, new Array(MAX_CLIENT_HELLO_BYTES).fill(0)]]);
    expect(parseClientHello(records(big))).toMatchObject({ status: 'error', reason: 'too_large' });
    // Just under the cap, across two records: fine.
    const fits = helloBody([[0xfe00, new Array(MAX_CLIENT_HELLO_BYTES - 200).fill(0)], sniExt('big.test')]);
    expect(parseClientHello(records(fits))).toMatchObject({ status: 'ok', sni: 'big.test' });
  });

  it('garbage: HTTP, SSLv2, other record types, a record length of 0 or over 2^14', () => {
    expect(parseClientHello(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n'))).toMatchObject({ status: 'error', reason: 'not_tls' });
    expect(parseClientHello(Buffer.from('G'))).toMatchObject({ status: 'error', reason: 'not_tls' });
    expect(parseClientHello(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01]))).toMatchObject({ status: 'error', reason: 'not_tls' });
    expect(parseClientHello(Buffer.from([23, 3, 3, 0, 5, 1, 2, 3, 4, 5]))).toMatchObject({ status: 'error', reason: 'not_tls' });
    expect(parseClientHello(Buffer.from([22, 3, 1, 0, 0]))).toMatchObject({ status: 'error', reason: 'malformed' });
    expect(parseClientHello(Buffer.from([22, 3, 1, 0x40, 0x01]))).toMatchObject({ status: 'error', reason: 'malformed' });
    // A ServerHello (type 2) where a ClientHello belongs.
    expect(parseClientHello(Buffer.from([22, 3, 3, 0, 4, 2, 0, 0, 0]))).toMatchObject({ status: 'error', reason: 'not_tls' });
    // Random bytes never throw.
    for (let i = 0; i < 2000; i++) {
      const b = Buffer.alloc(3 + Math.floor(Math.random() * 300));
      for (let j = 0; j < b.length; j++) b[j] = Math.floor(Math.random() * 256);
      if (i % 2 === 0) b.set([22, 3, 1], 0);
      expect(() => parseClientHello(b)).not.toThrow();
    }
  });
});

describe('SNI filter chains (Envoy server_names matching)', () => {
  const chain = (names: string[] | undefined, cluster: string): FilterChain => ({
    ...(names ? { filter_chain_match: { server_names: names } } : {}),
    filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: cluster, cluster, idle_timeout: { seconds: 0, nanos: 0 } } }],
  });

  it('exact first, then the longest wildcard suffix, then the chain without server_names', () => {
    const t = new SniChains([chain(['a.example.com'], 'exact'), chain(['*.example.com'], 'wild'), chain(['*.b.example.com'], 'wild-b')]);
    expect(t.match('a.example.com')?.clusters).toEqual(['exact']);
    expect(t.match('x.example.com')?.clusters).toEqual(['wild']);
    expect(t.match('x.b.example.com')?.clusters).toEqual(['wild-b']);
    expect(t.match('example.com')).toBeUndefined();
    expect(t.match(null)).toBeUndefined();
    const withDefault = new SniChains([chain(['a.test'], 'a'), chain(undefined, 'any')]);
    expect(withDefault.match('zzz.test')?.clusters).toEqual(['any']);
    expect(withDefault.match(null)?.clusters).toEqual(['any']);
  });
});
