// Test certificates made with the `openssl` command line in a temporary folder: a CA, server
// certificates with SANs, client certificates (optionally with a SPIFFE URI SAN).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CertFiles {
  cert: string;
  key: string;
  /** PEM text of the certificate and key. */
  certPem: string;
  keyPem: string;
}

export interface TestCa extends CertFiles {
  dir: string;
  /** A leaf signed by this CA. `sans` like `DNS:a.test`, `IP:127.0.0.1`, `URI:spiffe://...`. */
  issue(name: string, opts: { cn?: string; sans?: string[]; client?: boolean }): CertFiles;
  remove(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A new CA (EC P-256) in its own temporary folder; `name` prefixes the file names. */
export function createCa(name = 'ca', dir = mkdtempSync(join(tmpdir(), 'gatehouse-pki-'))): TestCa {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key], dir);
  openssl(['req', '-x509', '-new', '-key', key, '-sha256', '-days', '2', '-subj', `/CN=${name} test CA`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', cert], dir);
  let serial = 1;
  const ca: TestCa = {
    dir,
    cert,
    key,
    certPem: readFileSync(cert, 'utf8'),
    keyPem: readFileSync(key, 'utf8'),
    issue(leaf, opts) {
      const lkey = join(dir, `${leaf}.key`);
      const csr = join(dir, `${leaf}.csr`);
      const lcert = join(dir, `${leaf}.crt`);
      const ext = join(dir, `${leaf}.ext`);
      openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', lkey], dir);
      openssl(['req', '-new', '-key', lkey, '-subj', `/CN=${opts.cn ?? leaf}`, '-out', csr], dir);
      const lines = ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', `extendedKeyUsage=${opts.client ? 'clientAuth' : 'serverAuth,clientAuth'}`];
      if (opts.sans?.length) lines.push(`subjectAltName=${opts.sans.join(',')}`);
      writeFileSync(ext, `${lines.join('\n')}\n`);
      openssl(['x509', '-req', '-in', csr, '-CA', cert, '-CAkey', key, '-set_serial', String(serial++ + 1000), '-days', '2', '-sha256', '-extfile', ext, '-out', lcert], dir);
      return { cert: lcert, key: lkey, certPem: readFileSync(lcert, 'utf8'), keyPem: readFileSync(lkey, 'utf8') };
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return ca;
}
