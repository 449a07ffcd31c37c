// Jittered exponential backoff for reconnecting to the API server (client-go's reflector waits
// 800 ms doubling to 30 s): each wait is drawn between half and one and a half times the current
// step, so that many gateways restarting together do not retry in lockstep.
export class Backoff {
  readonly #initialMs: number;
  readonly #maxMs: number;
  #step: number;
  readonly #random: () => number;

  constructor(initialMs = 500, maxMs = 30_000, random: () => number = Math.random) {
    this.#initialMs = initialMs;
    this.#maxMs = maxMs;
    this.#step = initialMs;
    this.#random = random;
  }

  /** The next wait (ms); the step doubles, up to the maximum. */
  next(): number {
    const wait = Math.round(this.#step * (0.5 + this.#random()));
    this.#step = Math.min(this.#maxMs, this.#step * 2);
    return Math.min(wait, this.#maxMs);
  }

  reset(): void {
    this.#step = this.#initialMs;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
