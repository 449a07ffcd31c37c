// Reads the server name (SNI) of a TLS ClientHello without terminating TLS, as Envoy's
// tls_inspector does: TLS records (RFC 8446 §5.1) carrying one handshake message (which may span
// several records and arrive in any number of TCP segments), the ClientHello (§4.1.2) and its
// server_name extension (RFC 6066 §3). Every length is checked against what its parent allows.

/** The most ClientHello bytes (records included) read before giving up, as a DoS bound. */
export const MAX_CLIENT_HELLO_BYTES = 16 * 1024;

const RECORD_HEADER = 5;
const CONTENT_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const NAME_TYPE_HOST = 0;
/** RFC 8446: a plaintext record carries at most 2^14 bytes. */
const MAX_RECORD_PAYLOAD = 16384;

export type ClientHelloResult =
  /** More bytes are needed (nothing is wrong so far). */
  | { readonly status: 'incomplete' }
  /** A complete, well-formed ClientHello; `sni` is null when it names no server. */
  | { readonly status: 'ok'; readonly sni: string | null; readonly alpn: readonly string[]; readonly bytes: number }
  /** Not a (valid) TLS ClientHello; `reason` says why, for logs and counters. */
  | { readonly status: 'error'; readonly reason: ClientHelloError; readonly detail: string };

export type ClientHelloError = 'not_tls' | 'malformed' | 'too_large';

const INCOMPLETE: ClientHelloResult = Object.freeze({ status: 'incomplete' });

const fail = (reason: ClientHelloError, detail: string): ClientHelloResult => ({ status: 'error', reason, detail });

/**
 * Parses the start of a TLS connection (`buf`: every byte received so far). Call again with more
 * bytes while it answers `incomplete`; the caller caps the bytes at MAX_CLIENT_HELLO_BYTES (an
 * `incomplete` answer beyond that is `too_large` here too).
 */
export function parseClientHello(buf: Uint8Array): ClientHelloResult {
  // 1. Reassemble the handshake message from as many handshake records as it spans.
  let off = 0;
  let hs: Uint8Array | null = null;
  let have = 0;
  for (;;) {
    if (buf.length - off < RECORD_HEADER) {
      // A first byte that cannot start a handshake record is rejected at once.
      if (off === 0 && buf.length > 0 && buf[0] !== CONTENT_HANDSHAKE) return fail('not_tls', `first byte 0x${buf[0]!.toString(16)} is not a TLS handshake record`);
      return buf.length >= MAX_CLIENT_HELLO_BYTES ? fail('too_large', `no ClientHello within ${MAX_CLIENT_HELLO_BYTES} bytes`) : INCOMPLETE;
    }
    const type = buf[off]!;
    const major = buf[off + 1]!;
    const len = (buf[off + 3]! << 8) | buf[off + 4]!;
    if (type !== CONTENT_HANDSHAKE) return fail(off === 0 ? 'not_tls' : 'malformed', `record type ${type} where a handshake record was expected`);
    if (major !== 3) return fail(off === 0 ? 'not_tls' : 'malformed', `record version ${major}.${buf[off + 2]} is not TLS`);
    if (len === 0 || len > MAX_RECORD_PAYLOAD) return fail('malformed', `record length ${len} out of range`);
    const start = off + RECORD_HEADER;
    const avail = Math.min(len, buf.length - start);
    if (hs === null) {
      // The first record must hold the whole 4-byte handshake header (every real client does so).
      if (len < 4) return fail('malformed', 'handshake header split across records');
      if (avail < 4) return INCOMPLETE;
      if (buf[start] !== HANDSHAKE_CLIENT_HELLO) return fail('not_tls', `handshake type ${buf[start]} is not ClientHello`);
      const hsLen = (buf[start + 1]! << 16) | (buf[start + 2]! << 8) | buf[start + 3]!;
      if (4 + hsLen > MAX_CLIENT_HELLO_BYTES) return fail('too_large', `ClientHello of ${hsLen} bytes exceeds ${MAX_CLIENT_HELLO_BYTES}`);
      hs = new Uint8Array(4 + hsLen);
    }
    const want = hs.length - have;
    if (len > want) {
      // The handshake message ends inside this record but the record holds more (another message):
      // legal, but a ClientHello is the only message a client sends first; refuse the oddity.
      return fail('malformed', 'ClientHello record carries trailing data');
    }
    hs.set(buf.subarray(start, start + Math.min(avail, want)), have);
    have += Math.min(avail, want);
    if (have === hs.length) return parseHello(hs.subarray(4), start + len);
    if (avail < len) return INCOMPLETE; // the rest of this record has not arrived yet
    off = start + len;
    if (off >= MAX_CLIENT_HELLO_BYTES) return fail('too_large', `no complete ClientHello within ${MAX_CLIENT_HELLO_BYTES} bytes`);
  }
}

/** A bounds-checked reader over one byte range: every read says whether it fit. */
class Reader {
  pos: number;
  readonly end: number;
  readonly b: Uint8Array;
  constructor(b: Uint8Array, pos: number, end: number) {
    this.b = b;
    this.pos = pos;
    this.end = end;
  }
  get left(): number {
    return this.end - this.pos;
  }
  u8(): number {
    if (this.pos + 1 > this.end) return -1;
    return this.b[this.pos++]!;
  }
  u16(): number {
    if (this.pos + 2 > this.end) return -1;
    const v = (this.b[this.pos]! << 8) | this.b[this.pos + 1]!;
    this.pos += 2;
    return v;
  }
  /** A sub-reader over the next `n` bytes (consumed), or null when they are not all there. */
  take(n: number): Reader | null {
    if (n < 0 || this.pos + n > this.end) return null;
    const r = new Reader(this.b, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }
}

function parseHello(body: Uint8Array, consumed: number): ClientHelloResult {
  const r = new Reader(body, 0, body.length);
  const major = r.u8();
  r.u8();
  if (major !== 3) return fail('malformed', 'ClientHello legacy_version is not TLS');
  if (!r.take(32)) return fail('malformed', 'ClientHello random truncated');
  const sidLen = r.u8();
  if (sidLen < 0 || sidLen > 32 || !r.take(sidLen)) return fail('malformed', 'bad legacy_session_id');
  const csLen = r.u16();
  if (csLen < 2 || csLen % 2 !== 0 || !r.take(csLen)) return fail('malformed', 'bad cipher_suites');
  const cmLen = r.u8();
  if (cmLen < 1 || !r.take(cmLen)) return fail('malformed', 'bad legacy_compression_methods');
  // SSL 3.0-era hellos may end here: no extensions, so no server name.
  if (r.left === 0) return { status: 'ok', sni: null, alpn: [], bytes: consumed };
  const extLen = r.u16();
  const exts = extLen < 0 ? null : r.take(extLen);
  if (!exts || r.left !== 0) return fail('malformed', 'extensions length does not match the ClientHello');
  let sni: string | null = null;
  let alpn: string[] = [];
  const seen = new Set<number>();
  while (exts.left > 0) {
    const type = exts.u16();
    const len = exts.u16();
    const data = len < 0 ? null : exts.take(len);
    if (type < 0 || !data) return fail('malformed', 'extension truncated');
    if (seen.has(type)) return fail('malformed', `duplicate extension ${type}`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      const name = parseServerName(data);
      if (typeof name !== 'string' && name !== null) return name;
      sni = name;
    } else if (type === 16) {
      const list = parseAlpn(data);
      if (!list) return fail('malformed', 'bad application_layer_protocol_negotiation extension');
      alpn = list;
    }
  }
  return { status: 'ok', sni, alpn, bytes: consumed };
}

/** The host_name of a server_name extension (lowercased), null when it has none, or an error. */
function parseServerName(data: Reader): string | null | ClientHelloResult {
  // An empty extension is what a server sends back; from a client it names nothing.
  if (data.left === 0) return null;
  const listLen = data.u16();
  const list = listLen < 0 ? null : data.take(listLen);
  if (!list || data.left !== 0 || listLen === 0) return fail('malformed', 'server_name list length mismatch');
  let host: string | null = null;
  while (list.left > 0) {
    const nameType = list.u8();
    const len = list.u16();
    const name = len < 0 ? null : list.take(len);
    if (nameType < 0 || !name) return fail('malformed', 'server_name entry truncated');
    if (nameType !== NAME_TYPE_HOST) continue; // unknown name types are skipped (RFC 6066 allows them)
    if (host !== null) return fail('malformed', 'more than one host_name in server_name');
    if (len === 0 || len > 255) return fail('malformed', `host_name of ${len} bytes`);
    let s = '';
    for (let i = name.pos; i < name.end; i++) {
      const c = name.b[i]!;
      // Letters, digits, '-', '.', '_' (seen in the wild), '*' never legal in a request but harmless to reject.
      const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f;
      if (!ok) return fail('malformed', `host_name has byte 0x${c.toString(16)}`);
      s += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c + 32 : c);
    }
    if (s.startsWith('.') || s.endsWith('.') || s.includes('..')) return fail('malformed', `host_name "${s}" is not a DNS name`);
    host = s;
  }
  return host;
}

function parseAlpn(data: Reader): string[] | null {
  const len = data.u16();
  const list = len < 0 ? null : data.take(len);
  if (!list || data.left !== 0) return null;
  const out: string[] = [];
  while (list.left > 0) {
    const n = list.u8();
    const p = n <= 0 ? null : list.take(n);
    if (!p) return null;
    out.push(Buffer.from(p.b.subarray(p.pos, p.end)).toString('latin1'));
  }
  return out;
}
