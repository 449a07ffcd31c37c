// Raw HTTP/2 frames for hostile-client tests (what no well-behaved client library sends): the
// connection preface, SETTINGS, HEADERS with a minimal HPACK block, RST_STREAM, PING, GOAWAY.
import { connect, type Socket } from 'node:net';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 } as const;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an N-bit prefix (RFC 7541 5.1), the prefix's other bits in `first`. */
export function hpackInt(value: number, prefixBits: number, first = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

/** An HPACK string literal (no Huffman). */
function hpackString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  return Buffer.concat([hpackInt(b.length, 7), b]);
}

/** A literal header field with incremental indexing and a new name: it enters the dynamic table. */
export function hpackIndexedLiteral(name: string, value: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]);
}

/**
 * A request header block from the static table only (no dynamic table state, so blocks can be
 * sent in any order): `:method` GET or POST, `:scheme` http, `:path` (/ unless given, as a literal
 * without indexing), `:authority` as given (literal without indexing), then extra literal headers.
 */
export function requestBlock(authority: string, opts: { method?: 'GET' | 'POST'; path?: string; extra?: Array<[string, string]> } = {}): Buffer {
  const path = opts.path === undefined || opts.path === '/' ? Buffer.from([0x84]) : Buffer.concat([Buffer.from([0x04]), hpackString(opts.path)]);
  const parts: Buffer[] = [Buffer.from([opts.method === 'POST' ? 0x83 : 0x82, 0x86]), path, Buffer.from([0x01]), hpackString(authority)];
  for (const [k, v] of opts.extra ?? []) parts.push(Buffer.from([0x00]), hpackString(k), hpackString(v));
  return Buffer.concat(parts);
}

export function headers(streamId: number, block: Buffer, opts: { endStream?: boolean; endHeaders?: boolean } = {}): Buffer {
  return frame(FRAME.HEADERS, (opts.endStream === false ? 0 : FLAG.END_STREAM) | (opts.endHeaders === false ? 0 : FLAG.END_HEADERS), streamId, block);
}

export function rstStream(streamId: number, code = 8 /* CANCEL */): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, streamId, p);
}

export function settings(values: Array<[number, number]> = []): Buffer {
  const p = Buffer.alloc(values.length * 6);
  values.forEach(([id, v], i) => {
    p.writeUInt16BE(id, i * 6);
    p.writeUInt32BE(v, i * 6 + 2);
  });
  return frame(FRAME.SETTINGS, 0, 0, p);
}

export const settingsAck = (): Buffer => frame(FRAME.SETTINGS, FLAG.ACK, 0);
export const ping = (): Buffer => frame(FRAME.PING, 0, 0, Buffer.alloc(8));

export interface ParsedFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** A raw h2c connection (prior knowledge) that records the frames the server sends. */
export interface RawH2 {
  socket: Socket;
  frames: ParsedFrame[];
  /** Resolves when the server closed or reset the connection. */
  closed: Promise<void>;
  isClosed(): boolean;
  /** The server's GOAWAY, if any: [last stream id, error code]. */
  goaway(): [number, number] | undefined;
  write(b: Buffer): void;
}

export function rawH2(port: number, opts: { preface?: boolean } = {}): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const frames: ParsedFrame[] = [];
    let buf = Buffer.alloc(0);
    let closed = false;
    let onClosed!: () => void;
    const closedP = new Promise<void>((r) => (onClosed = r));
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        frames.push({ type: buf[3]!, flags: buf[4]!, streamId: buf.readUInt32BE(5) & 0x7fffffff, payload: buf.subarray(9, 9 + len) });
        buf = buf.subarray(9 + len);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      onClosed();
    });
    socket.once('connect', () => {
      if (opts.preface !== false) socket.write(Buffer.concat([PREFACE, settings()]));
      resolve({
        socket,
        frames,
        closed: closedP,
        isClosed: () => closed,
        goaway() {
          const g = frames.find((f) => f.type === FRAME.GOAWAY);
          return g ? [g.payload.readUInt32BE(0) & 0x7fffffff, g.payload.readUInt32BE(4)] : undefined;
        },
        write: (b) => void socket.write(b),
      });
    });
    socket.once('error', reject);
  });
}
