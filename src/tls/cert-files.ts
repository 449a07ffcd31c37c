// uWS reads certificates only from files. Checked PEMs (from Secrets, ACME, or files that may
// change under us) are written to a private 0700 folder, one pair of 0600 files per content
// hash, so a new version never overwrites a file being read; unused pairs are removed.
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServerCertificate } from './pem.js';

export interface CertFileNames {
  cert_file_name: string;
  key_file_name: string;
}

export class PrivateCertDir {
  readonly dir: string;
  readonly #files = new Map<string, CertFileNames>();
  #removed = false;

  constructor(parent = tmpdir()) {
    // mkdtemp creates the folder with mode 0700.
    this.dir = mkdtempSync(join(parent, 'gatehouse-tls-'));
    process.once('exit', () => this.remove());
  }

  /** Files holding this certificate and key (written once per content hash). */
  files(m: ServerCertificate): CertFileNames {
    let f = this.#files.get(m.hash);
    if (!f) {
      f = { cert_file_name: join(this.dir, `${m.hash}.crt`), key_file_name: join(this.dir, `${m.hash}.key`) };
      writeFileSync(f.cert_file_name, m.certPem, { mode: 0o600 });
      writeFileSync(f.key_file_name, m.keyPem, { mode: 0o600 });
      this.#files.set(m.hash, f);
    }
    return f;
  }

  /** Removes the files of every hash not in `keep`. */
  prune(keep: ReadonlySet<string>): void {
    for (const [hash, f] of this.#files) {
      if (keep.has(hash)) continue;
      this.#files.delete(hash);
      for (const p of [f.cert_file_name, f.key_file_name]) {
        try {
          unlinkSync(p);
        } catch {
          // already gone
        }
      }
    }
  }

  remove(): void {
    if (this.#removed) return;
    this.#removed = true;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
