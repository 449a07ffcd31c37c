import { STATUS_CODES } from 'node:http';

const LINES: string[] = [];

/** `200 OK`-style status lines, built once per code. */
export function statusLine(code: number): string {
  let line = LINES[code];
  if (line === undefined) {
    line = `${code} ${STATUS_CODES[code] ?? 'Unknown'}`;
    if (code >= 100 && code < 1000) LINES[code] = line;
  }
  return line;
}
