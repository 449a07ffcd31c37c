// The https scenario's certificate (made with the openssl command line, in the run's temp folder).
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import type { CertPaths } from './types.js';
import { HOST } from './wire.js';

/** A self-signed EC P-256 certificate for bench.local, in the temp dir. */
export function makeCert(tmp: string): CertPaths {
  const cert = path.join(tmp, 'bench.crt');
  const key = path.join(tmp, 'bench.key');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${HOST}`, '-addext', `subjectAltName=DNS:${HOST}`, '-keyout', key, '-out', cert],
    { cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return { cert, key };
}
