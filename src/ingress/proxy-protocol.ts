// The PROXY protocol (HAProxy's spec, v1 text and v2 binary) on the first bytes of a connection,
// for listeners whose Gateway has `gatehouse.io/proxy-protocol: "true"` (Envoy's proxy_protocol
// listener filter). The header is required, as Envoy requires it: a connection without a valid
// one is closed. `LOCAL` (v2) and `UNKNOWN` (v1) keep the connection's own addresses.

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** v1: `PROXY ... \r\n` is at most 107 bytes. */
const V1_MAX = 107;

export type ProxyHeader =
  | { kind: 'incomplete' }
  | { kind: 'invalid'; reason: string }
  /** `source` / `destination` are undefined for LOCAL / UNKNOWN (use the socket's addresses). */
  | { kind: 'ok'; consumed: number; source?: string; destination?: string; sourcePort?: number; destinationPort?: number };

export function parseProxyHeader(buf: Buffer): ProxyHeader {
  if (buf.length === 0) return { kind: 'incomplete' };
  if (buf[0] === 0x0d) return parseV2(buf);
  if (buf[0] === 0x50 /* P */) return parseV1(buf);
  return { kind: 'invalid', reason: 'no PROXY protocol header' };
}

function parseV1(buf: Buffer): ProxyHeader {
  const prefix = 'PROXY ';
  const n = Math.min(buf.length, prefix.length);
  if (buf.toString('latin1', 0, n) !== prefix.slice(0, n)) return { kind: 'invalid', reason: 'no PROXY protocol header' };
  const end = buf.indexOf('\r\n', 0, 'latin1');
  if (end < 0) return buf.length >= V1_MAX ? { kind: 'invalid', reason: 'PROXY v1 header too long' } : { kind: 'incomplete' };
  if (end + 2 > V1_MAX) return { kind: 'invalid', reason: 'PROXY v1 header too long' };
  const parts = buf.toString('latin1', 0, end).split(' ');
  if (parts[1] === 'UNKNOWN') return { kind: 'ok', consumed: end + 2 };
  if (parts.length !== 6 || (parts[1] !== 'TCP4' && parts[1] !== 'TCP6')) return { kind: 'invalid', reason: 'malformed PROXY v1 header' };
  const [, , src, dst, sp, dp] = parts as [string, string, string, string, string, string];
  const sourcePort = Number(sp);
  const destinationPort = Number(dp);
  if (!/^\d{1,5}$/.test(sp) || !/^\d{1,5}$/.test(dp) || sourcePort > 65535 || destinationPort > 65535) return { kind: 'invalid', reason: 'malformed PROXY v1 ports' };
  return { kind: 'ok', consumed: end + 2, source: src, destination: dst, sourcePort, destinationPort };
}

function parseV2(buf: Buffer): ProxyHeader {
  const n = Math.min(buf.length, V2_SIGNATURE.length);
  if (buf.compare(V2_SIGNATURE, 0, n, 0, n) !== 0) return { kind: 'invalid', reason: 'no PROXY protocol header' };
  if (buf.length < 16) return { kind: 'incomplete' };
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return { kind: 'invalid', reason: 'unsupported PROXY protocol version' };
  const len = buf.readUInt16BE(14);
  if (buf.length < 16 + len) return { kind: 'incomplete' };
  const consumed = 16 + len;
  const cmd = verCmd & 0x0f;
  if (cmd === 0) return { kind: 'ok', consumed }; // LOCAL: health checks of the proxy itself
  if (cmd !== 1) return { kind: 'invalid', reason: 'unsupported PROXY v2 command' };
  const family = buf[13]! >> 4;
  const a = buf.subarray(16, consumed);
  if (family === 1 && len >= 12) {
    return { kind: 'ok', consumed, source: Array.from(a.subarray(0, 4)).join('.'), destination: Array.from(a.subarray(4, 8)).join('.'), sourcePort: a.readUInt16BE(8), destinationPort: a.readUInt16BE(10) };
  }
  if (family === 2 && len >= 36) {
    return { kind: 'ok', consumed, source: ipv6(a.subarray(0, 16)), destination: ipv6(a.subarray(16, 32)), sourcePort: a.readUInt16BE(32), destinationPort: a.readUInt16BE(34) };
  }
  // AF_UNSPEC / AF_UNIX: no usable address, the connection's own apply.
  if (family === 0 || family === 3) return { kind: 'ok', consumed };
  return { kind: 'invalid', reason: 'malformed PROXY v2 addresses' };
}

function ipv6(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // IPv4-mapped: shown as the IPv4 address, as the listeners show them.
  if (groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff') return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  return groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}
