// A small authoritative DNS server for tests, on 127.0.0.1 UDP (ephemeral port). It answers A
// queries from a mutable map (with the TTL given there), NOERROR without answers (NODATA) for
// other types of a known name, NXDOMAIN for unknown names, can drop every query (`drop`) to
// play a dead server, and can answer a name late (`delays`) to play a slow one. Only the header and the first question of a query are read.
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';

export interface DnsRecord {
  /** IPv4 addresses, answered in this order. */
  addresses: string[];
  /** TTL in seconds. */
  ttl: number;
}

export interface TestDnsServer {
  readonly port: number;
  /** `127.0.0.1:<port>`, for GATEHOUSE_DNS_SERVERS / Resolver.setServers. */
  readonly address: string;
  /** Names (lower case, no trailing dot) and their A records; edit freely. */
  readonly records: Map<string, DnsRecord>;
  /** While true, queries are read and ignored. */
  drop: boolean;
  /** Queries received per name (also while dropping). */
  readonly queries: Map<string, number>;
  /** Names (lower case, no trailing dot) answered only after this many ms; edit freely. */
  readonly delays: Map<string, number>;
  set(name: string, addresses: string[], ttl?: number): void;
  close(): Promise<void>;
}

const TYPE_A = 1;
const CLASS_IN = 1;
const RCODE_NXDOMAIN = 3;
const RCODE_FORMERR = 1;

interface Question {
  name: string;
  type: number;
  klass: number;
  /** Offset just past the question in the query. */
  end: number;
}

function readQuestion(msg: Buffer): Question | null {
  if (msg.length < 12 || msg.readUInt16BE(4) < 1) return null;
  const labels: string[] = [];
  let off = 12;
  for (;;) {
    if (off >= msg.length) return null;
    const len = msg[off]!;
    off++;
    if (len === 0) break;
    // No compression in a query's first name.
    if (len > 63 || off + len > msg.length) return null;
    labels.push(msg.toString('latin1', off, off + len));
    off += len;
  }
  if (off + 4 > msg.length) return null;
  return { name: labels.join('.').toLowerCase(), type: msg.readUInt16BE(off), klass: msg.readUInt16BE(off + 2), end: off + 4 };
}

function response(query: Buffer, q: Question | null, rcode: number, answers: string[], ttl: number): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(query.readUInt16BE(0), 0);
  // QR=1, opcode from the query, AA=1, RD copied, RA=0.
  const qflags = query.readUInt16BE(2);
  header.writeUInt16BE(0x8000 | (qflags & 0x7800) | 0x0400 | (qflags & 0x0100) | rcode, 2);
  header.writeUInt16BE(q ? 1 : 0, 4);
  header.writeUInt16BE(answers.length, 6);
  const parts: Buffer[] = [header];
  if (q) parts.push(query.subarray(12, q.end));
  for (const a of answers) {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0); // name: pointer to the question's name
    rr.writeUInt16BE(TYPE_A, 2);
    rr.writeUInt16BE(CLASS_IN, 4);
    rr.writeUInt32BE(ttl >>> 0, 6);
    rr.writeUInt16BE(4, 10);
    a.split('.').forEach((o, i) => (rr[12 + i] = Number(o)));
    parts.push(rr);
  }
  return Buffer.concat(parts);
}

export async function startDnsServer(initial: Record<string, string[] | DnsRecord> = {}, defaultTtl = 1): Promise<TestDnsServer> {
  const socket: Socket = createSocket('udp4');
  const records = new Map<string, DnsRecord>();
  const queries = new Map<string, number>();
  const delays = new Map<string, number>();
  const norm = (n: string): string => n.toLowerCase().replace(/\.$/, '');
  for (const [name, r] of Object.entries(initial)) records.set(norm(name), Array.isArray(r) ? { addresses: r, ttl: defaultTtl } : r);
  const server = {
    port: 0,
    address: '',
    records,
    drop: false,
    queries,
    delays,
    set(name: string, addresses: string[], ttl = defaultTtl) {
      records.set(norm(name), { addresses, ttl });
    },
    close: () => new Promise<void>((res) => socket.close(() => res())),
  };
  socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    if (msg.length < 12) return;
    const q = readQuestion(msg);
    if (q) queries.set(q.name, (queries.get(q.name) ?? 0) + 1);
    if (server.drop) return;
    let out: Buffer;
    if (!q) out = response(msg, null, RCODE_FORMERR, [], 0);
    else {
      const rec = records.get(q.name);
      if (!rec) out = response(msg, q, RCODE_NXDOMAIN, [], 0);
      else if (q.type === TYPE_A && q.klass === CLASS_IN) out = response(msg, q, 0, rec.addresses, rec.ttl);
      else out = response(msg, q, 0, [], 0);
    }
    const delay = q ? (delays.get(q.name) ?? 0) : 0;
    const send = (): void => {
      try {
        socket.send(out, rinfo.port, rinfo.address);
      } catch {
        // closed meanwhile
      }
    };
    if (delay > 0) setTimeout(send, delay).unref();
    else send();
  });
  await new Promise<void>((res, rej) => {
    socket.once('error', rej);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', rej);
      res();
    });
  });
  server.port = socket.address().port;
  server.address = `127.0.0.1:${server.port}`;
  return server;
}
