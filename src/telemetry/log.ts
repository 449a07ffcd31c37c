// Structured logs (pino, JSON lines on stdout). One logger per process; stages take child loggers.
import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(level: LogLevel = 'info'): Logger {
  return pino({ level, base: { name: 'gatehouse' }, timestamp: pino.stdTimeFunctions.isoTime });
}
