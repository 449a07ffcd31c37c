// Reading what uWS lends per call: the peer address (IPv4, IPv4-mapped, IPv6) and body memory copies.
import { describe, expect, it } from 'vitest';
import type uWS from 'uWebSockets.js';
import { copyArrayBuffer, remoteAddress } from '../../src/ingress/uws-request.js';

const fakeRes = (bin: number[], text: string): uWS.HttpResponse =>
  ({
    getRemoteAddress: () => new Uint8Array(bin).buffer,
    getRemoteAddressAsText: () => new TextEncoder().encode(text).buffer,
  }) as unknown as uWS.HttpResponse;

describe('remoteAddress', () => {
  it('formats 4-byte IPv4 addresses', () => {
    expect(remoteAddress(fakeRes([127, 0, 0, 1], 'unused'))).toBe('127.0.0.1');
    expect(remoteAddress(fakeRes([10, 200, 3, 255], 'unused'))).toBe('10.200.3.255');
  });

  it('shows IPv4-mapped IPv6 as IPv4, and repeated peers give the same text', () => {
    const mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 7];
    expect(remoteAddress(fakeRes(mapped, 'unused'))).toBe('192.168.1.7');
    expect(remoteAddress(fakeRes(mapped, 'unused'))).toBe('192.168.1.7');
  });

  it('takes the text form for real IPv6 peers', () => {
    const v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4]; // not v4-mapped: prefix non-zero
    expect(remoteAddress(fakeRes(v6, '2001:db8::ffff:102:304'))).toBe('2001:db8::ffff:102:304');
    expect(remoteAddress(fakeRes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], '::1'))).toBe('::1');
  });
});

describe('copyArrayBuffer', () => {
  it('copies: the Buffer keeps its bytes after the lent memory changes (uWS reuses it)', () => {
    for (const size of [0, 1, 100, 4096, 65536]) {
      const ab = new ArrayBuffer(size);
      const view = new Uint8Array(ab);
      for (let i = 0; i < size; i++) view[i] = i & 0xff;
      const b = copyArrayBuffer(ab);
      view.fill(0xee);
      expect(b.length).toBe(size);
      for (let i = 0; i < size; i += 97) expect(b[i]).toBe(i & 0xff);
    }
  });
});
