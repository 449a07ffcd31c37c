// Milliseconds per stage of one configuration change (informer event → traffic), for the debug
// log of each applied configuration: where a slow reload spends its time, without a profiler.
import { performance } from 'node:perf_hooks';

export type StageTimes = Record<string, number>;

export class Stages {
  readonly times: StageTimes = {};
  #last = performance.now();

  /** The time since the previous mark (or the start), recorded as `name` (added to, when repeated). */
  mark(name: string): void {
    const now = performance.now();
    this.times[name] = Math.round(((this.times[name] ?? 0) + now - this.#last) * 10) / 10;
    this.#last = now;
  }
}
