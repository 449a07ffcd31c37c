// `gatehouse proxy-status --xds-address host:port`: asks a control plane for its sync state over
// the xDS port itself (Istio's debug type `istio.io/debug/syncz`, as istioctl asks istiod) and
// formats it the way `istioctl proxy-status` prints it.
import * as grpc from '@grpc/grpc-js';
import { adsServiceClient } from './protos.js';
import { SYNCZ_TYPE, type Syncz } from './server.js';

/** Decodes google.protobuf.StringValue (field 1, length-delimited). */
function decodeStringValue(b: Uint8Array): string {
  if (b.length === 0) return '';
  if (b[0] !== 0x0a) throw new Error('not a StringValue');
  let len = 0;
  let shift = 0;
  let i = 1;
  for (; i < b.length; i++) {
    const byte = b[i]!;
    len |= (byte & 0x7f) << shift;
    shift += 7;
    if ((byte & 0x80) === 0) break;
  }
  return Buffer.from(b.subarray(i + 1, i + 1 + len)).toString('utf8');
}

export function fetchSyncz(address: string, timeoutMs = 5_000): Promise<Syncz> {
  const Ctor = adsServiceClient();
  const client = new Ctor(address, grpc.credentials.createInsecure());
  return new Promise<Syncz>((resolve, reject) => {
    const deadline = new Date(Date.now() + timeoutMs);
    const call = (client as unknown as { StreamAggregatedResources(opts: grpc.CallOptions): grpc.ClientDuplexStream<unknown, { resources: Array<{ value: Uint8Array }> }> }).StreamAggregatedResources({ deadline });
    let done = false;
    const finish = (err: Error | null, v?: Syncz): void => {
      if (done) return;
      done = true;
      call.cancel();
      client.close();
      if (err) reject(err);
      else resolve(v!);
    };
    call.on('data', (r) => {
      try {
        finish(null, JSON.parse(decodeStringValue(r.resources[0]?.value ?? new Uint8Array())) as Syncz);
      } catch (e) {
        finish(new Error(`unexpected answer from ${address}: ${(e as Error).message}`));
      }
    });
    call.on('error', (e: grpc.ServiceError) => finish(new Error(e.code === grpc.status.DEADLINE_EXCEEDED ? `no answer from ${address} within ${timeoutMs / 1000} s` : `${address}: ${e.details || e.message}`)));
    call.write({ node: { id: `proxy-status~127.0.0.1~gatehouse-cli.${process.pid}~cli.svc.cluster.local`, user_agent_name: 'gatehouse-cli' }, type_url: SYNCZ_TYPE });
  });
}

const TYPES = ['CDS', 'LDS', 'EDS', 'RDS', 'SDS'] as const;

/** A table as istioctl proxy-status prints it, then one line per NACK. */
export function formatSyncz(s: Syncz): string {
  const rows: string[][] = [['NAME', 'KIND', ...TYPES, 'VERSION']];
  const nacks: string[] = [];
  for (const c of [...s.clients].sort((a, b) => a.id.localeCompare(b.id))) {
    rows.push([
      c.id,
      c.kind,
      ...TYPES.map((t) => c.types[t]?.status ?? 'NOT SENT'),
      s.version ?? '',
    ]);
    for (const t of TYPES) {
      const n = c.types[t]?.nacked;
      if (n) nacks.push(`${c.id} NACKed ${t} version ${n.version}: ${n.message}`);
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((v, i) => (i === r.length - 1 ? v : v.padEnd(widths[i]! + 2))).join('').trimEnd());
  if (s.clients.length === 0) lines.push('(no proxies connected)');
  return [...lines, ...nacks].join('\n') + '\n';
}
