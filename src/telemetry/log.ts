// Structured logs (pino). One logger per thread; stages take child loggers. Two formats:
// - json: one JSON object per line on stdout, written synchronously — what log collectors expect,
//   and the default when stdout is not a terminal;
// - pretty: readable lines for a person at a terminal, formatted by pino-pretty on pino's
//   transport thread (pretty-transport.ts), so formatting never runs on a thread serving requests.
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LOG_FORMATS = ['pretty', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** `pretty` on a terminal, `json` otherwise (a pipe, a file, a container's log driver). */
export function defaultLogFormat(stream: { isTTY?: boolean } = process.stdout): LogFormat {
  return stream.isTTY ? 'pretty' : 'json';
}

export interface LoggerOptions {
  format?: LogFormat;
  /** Colours in pretty lines (default: stdout is a terminal and NO_COLOR is not set). */
  colorize?: boolean;
}

export function createLogger(level: LogLevel = 'info', o: LoggerOptions = {}): Logger {
  const options = { level, base: { name: 'gatehouse' }, timestamp: pino.stdTimeFunctions.isoTime };
  if ((o.format ?? 'json') === 'json') return pino(options);
  const colorize = o.colorize ?? (process.stdout.isTTY === true && !process.env.NO_COLOR);
  const transport = pino.transport({
    target: fileURLToPath(new URL('./pretty-transport.js', import.meta.url)),
    options: { colorize },
  });
  return pino(options, transport);
}
