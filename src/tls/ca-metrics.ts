// Citadel's metrics for the mesh CA, with istiod's names (security/pkg/server/ca/monitoring.go):
// every certificate request counted, issued ones and failures by kind, and the expiry of the root
// and of the signing chain.
import { Counter, Gauge, type Registry } from 'prom-client';

export class CaMetrics {
  readonly #csr: Counter;
  readonly #success: Counter;
  readonly #parseErrors: Counter;
  readonly #signErrors: Counter<'error'>;

  /** `rootNotAfter` / `chainNotAfter`: when the root and the signing certificate expire. */
  constructor(registry: Registry, expiry: { root: Date; chain: Date }) {
    const registers = [registry];
    this.#csr = new Counter({ name: 'citadel_server_csr_count', help: 'The number of CSRs received by Citadel server.', registers });
    this.#success = new Counter({ name: 'citadel_server_success_cert_issuance_count', help: 'The number of certificates issuances that have succeeded.', registers });
    this.#parseErrors = new Counter({ name: 'citadel_server_csr_parsing_err_count', help: 'The number of errors occurred when parsing the CSR.', registers });
    this.#signErrors = new Counter({ name: 'citadel_server_csr_sign_err_count', help: 'The number of errors occurred when signing the CSR.', labelNames: ['error'], registers });
    const root = expiry.root.getTime() / 1000;
    const chain = expiry.chain.getTime() / 1000;
    new Gauge({ name: 'citadel_server_root_cert_expiry_timestamp', help: 'The unix timestamp, in seconds, when the root cert will expire.', registers }).set(root);
    new Gauge({ name: 'citadel_server_cert_chain_expiry_timestamp', help: 'The unix timestamp, in seconds, when Istio generated cert chain will expire.', registers }).set(chain);
    new Gauge({
      name: 'citadel_server_root_cert_expiry_seconds',
      help: 'The time remaining, in seconds, before the root cert will expire. A negative value indicates the cert is expired.',
      registers,
      collect() {
        this.set(root - Date.now() / 1000);
      },
    });
    new Gauge({
      name: 'citadel_server_cert_chain_expiry_seconds',
      help: 'The time remaining, in seconds, before the Istio Generated cert chain will expire. A negative value indicates the cert is expired.',
      registers,
      collect() {
        this.set(chain - Date.now() / 1000);
      },
    });
  }

  received(): void {
    this.#csr.inc();
  }
  issued(): void {
    this.#success.inc();
  }
  parseError(): void {
    this.#parseErrors.inc();
  }
  signError(error: string): void {
    this.#signErrors.inc({ error });
  }
}
