// What a process (the gateway under test) holds, read from /proc: its open file descriptors and
// its TCP sockets with their ports and states, to prove that hostile clients leave nothing behind.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** Open file descriptors of a process. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export interface TcpSocket {
  localPort: number;
  remotePort: number;
  /** Linux TCP state: ESTABLISHED, CLOSE_WAIT, LISTEN, ... */
  state: string;
}

const STATES: Record<string, string> = {
  '01': 'ESTABLISHED',
  '02': 'SYN_SENT',
  '03': 'SYN_RECV',
  '04': 'FIN_WAIT1',
  '05': 'FIN_WAIT2',
  '06': 'TIME_WAIT',
  '07': 'CLOSE',
  '08': 'CLOSE_WAIT',
  '09': 'LAST_ACK',
  '0A': 'LISTEN',
  '0B': 'CLOSING',
};

/**
 * The TCP sockets a process has open (a socket reset by its peer is CLOSE and no longer listed by
 * the kernel: fdCount still counts it).
 */
export function tcpSockets(pid: number): TcpSocket[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const out: TcpSocket[] = [];
  for (const table of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9]!)) continue;
      out.push({ localPort: parseInt(f[1]!.split(':')[1]!, 16), remotePort: parseInt(f[2]!.split(':')[1]!, 16), state: STATES[f[3]!] ?? f[3]! });
    }
  }
  return out;
}

/** The process's TCP connections to a remote port (its upstream connections to a server). */
export function connectionsTo(pid: number, remotePort: number): TcpSocket[] {
  return tcpSockets(pid).filter((s) => s.remotePort === remotePort && s.state !== 'LISTEN');
}

/** The process's accepted TCP connections on one of its listening ports. */
export function connectionsOn(pid: number, localPort: number): TcpSocket[] {
  return tcpSockets(pid).filter((s) => s.localPort === localPort && s.state !== 'LISTEN');
}
