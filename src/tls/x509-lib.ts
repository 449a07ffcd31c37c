// @peculiar/x509, which builds certificates on node's webcrypto (mesh-ca.ts says why), imported
// on the first certificate made rather than with the files that use it: with reflect-metadata
// and tsyringe it costs ~10 MB of RSS, which a gateway that never issues one does not pay.
import { webcrypto } from 'node:crypto';

export type X509Lib = typeof import('@peculiar/x509');

let pending: Promise<X509Lib> | undefined;

/** @peculiar/x509 set up on node's webcrypto, imported once. */
export function loadX509(): Promise<X509Lib> {
  pending ??= (async () => {
    await import('reflect-metadata');
    const m = await import('@peculiar/x509');
    m.cryptoProvider.set(webcrypto as unknown as Parameters<typeof m.cryptoProvider.set>[0]);
    return m;
  })();
  return pending;
}
