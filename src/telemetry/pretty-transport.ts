// pino transport (runs on pino's transport thread, never on a serving thread): readable log
// lines for a terminal, by pino-pretty. One line per record:
//   [12:00:01.234] WARN: [ingress] no valid certificate for ... port=8443 secret=file-cert:...
// Scalar context fields follow the message as key=value; an error's stack follows on its own
// lines; lists and objects are left to the JSON format.
import pinoPretty from 'pino-pretty';

type Colors = { gray?: (s: string) => string } | undefined;

/** Fields every record has, or shown otherwise (time, level, message; thread context as a prefix). */
const HIDDEN = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name', 'stage', 'worker', 'component', 'v']);

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return JSON.stringify(v) ?? String(v);
}

function errorText(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { stack?: unknown; message?: unknown; type?: unknown };
  const text = typeof e.stack === 'string' ? e.stack : typeof e.message === 'string' ? `${String(e.type ?? 'Error')}: ${e.message}` : undefined;
  return text?.split('\n').map((l) => `    ${l}`).join('\n');
}

export function messageFormat(log: Record<string, unknown>, messageKey: string, _level: string, extras?: { colors?: Colors }): string {
  const gray = extras?.colors?.gray ?? ((s: string) => s);
  const msg = typeof log[messageKey] === 'string' ? (log[messageKey] as string) : '';
  const context = [log.worker !== undefined ? `worker ${value(log.worker)}` : '', typeof log.stage === 'string' ? log.stage : '', typeof log.component === 'string' ? log.component : '']
    .filter(Boolean)
    .join(' ');
  const fields: string[] = [];
  let stack: string | undefined;
  for (const [k, v] of Object.entries(log)) {
    if (HIDDEN.has(k) || k === messageKey || v === undefined) continue;
    if (k === 'err' && (stack = errorText(v)) !== undefined) continue;
    // A field the message already says (a problem line, a host name) is not repeated; lists and
    // objects are for the JSON format (the message says what a person needs of them).
    if (typeof v === 'string' && v.length > 0 && msg.includes(v)) continue;
    if (typeof v === 'object' && v !== null) continue;
    fields.push(`${k}=${value(v)}`);
  }
  return `${context ? `[${context}] ` : ''}${msg}${fields.length > 0 ? ` ${gray(fields.join(' '))}` : ''}${stack ? `\n${stack}` : ''}`;
}

export default function prettyTransport(opts: { colorize?: boolean } = {}): ReturnType<typeof pinoPretty> {
  return pinoPretty({
    colorize: opts.colorize === true,
    translateTime: 'SYS:HH:MM:ss.l',
    hideObject: true,
    ignore: 'pid,hostname,name',
    messageFormat,
    // Straight to stdout from this thread (as the JSON format writes it).
    destination: 1,
    sync: false,
  });
}
