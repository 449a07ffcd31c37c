// Envoy's outlier detection as Istio configures it (consecutive 5xx / gateway errors, optionally
// local-origin errors apart): results are charged per host as responses and failures happen; a
// host reaching a threshold is ejected at once, if max_ejection_percent allows; every `interval`
// the sweep returns hosts whose ejection time (base × backoff, capped) is over and decays the
// backoff of healthy hosts. Success-rate detection is off, as Istio sets it.
import { durationToMs, type OutlierDetectionConfig } from '../controlplane/snapshot.js';

/** Per-host state; survives config versions while the host stays in the cluster. */
export class HostHealth {
  /** Envoy's FAILED_OUTLIER_CHECK health flag. */
  ejected = false;
  consecutive5xx = 0;
  consecutiveGatewayFailure = 0;
  consecutiveLocalOriginFailure = 0;
  /** Multiplier of base_ejection_time; grows per ejection, decays per healthy interval. */
  ejectTimeBackoff = 0;
  /** Times ejected, ever (for /clusters). */
  numEjections = 0;
  lastEjectionTime = -1;
  lastUnejectionTime = -1;
}

export interface OutlierSettings {
  consecutive5xx: number;
  consecutiveGatewayFailure: number;
  enforcing5xx: number;
  enforcingGatewayFailure: number;
  splitLocalOrigin: boolean;
  consecutiveLocalOriginFailure: number;
  intervalMs: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  maxEjectionPercent: number;
}

/** Envoy's defaults for what the cluster's outlier_detection leaves out. */
export function outlierSettings(c: OutlierDetectionConfig): OutlierSettings {
  const base = durationToMs(c.base_ejection_time) || 30_000;
  return {
    consecutive5xx: c.consecutive_5xx,
    consecutiveGatewayFailure: c.consecutive_gateway_failure,
    enforcing5xx: c.enforcing_consecutive_5xx,
    enforcingGatewayFailure: c.enforcing_consecutive_gateway_failure,
    splitLocalOrigin: c.split_external_local_origin_errors,
    consecutiveLocalOriginFailure: c.consecutive_local_origin_failure,
    intervalMs: durationToMs(c.interval) || 10_000,
    baseEjectionMs: base,
    // Envoy: max_ejection_time defaults to 300 s, or base_ejection_time when that is larger.
    maxEjectionMs: Math.max(300_000, base),
    maxEjectionPercent: Math.min(100, c.max_ejection_percent),
  };
}

/** What went wrong with an attempt before (or instead of) an HTTP status. */
export type LocalFailure = 'connect' | 'reset' | 'timeout';

type EjectionKind = 'consecutive_5xx' | 'consecutive_gateway_failure' | 'consecutive_local_origin_failure';

export class OutlierDetector {
  settings: OutlierSettings;
  /** Hosts of the cluster by `address:port`: the set max_ejection_percent is measured against. */
  readonly hosts: Map<string, HostHealth>;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #onChange: () => void;
  ejectedCount = 0;
  /** Envoy's outlier_detection.ejections_enforced_total / ejections_overflow. */
  ejectionsEnforced = 0;
  ejectionsOverflow = 0;

  constructor(settings: OutlierSettings, hosts: Map<string, HostHealth>, onChange: () => void, now: () => number = performance.now.bind(performance), random: () => number = Math.random) {
    this.settings = settings;
    this.hosts = hosts;
    this.#onChange = onChange;
    this.#now = now;
    this.#random = random;
  }

  /** An HTTP response status from the host (Envoy's putHttpResponseCode). */
  httpStatus(h: HostHealth, status: number): void {
    const s = this.settings;
    if (s.splitLocalOrigin) h.consecutiveLocalOriginFailure = 0;
    if (status >= 500 && status < 600) {
      if (status === 502 || status === 503 || status === 504) {
        if (++h.consecutiveGatewayFailure === s.consecutiveGatewayFailure) this.#consecutive(h, 'consecutive_gateway_failure');
      } else {
        h.consecutiveGatewayFailure = 0;
      }
      if (++h.consecutive5xx === s.consecutive5xx) this.#consecutive(h, 'consecutive_5xx');
    } else {
      h.consecutive5xx = 0;
      h.consecutiveGatewayFailure = 0;
    }
  }

  /**
   * A connect failure, reset or timeout. Unless local-origin errors are split off, Envoy maps a
   * timeout to 504 and the others to 503 (so they count as 5xx and as gateway errors).
   */
  localFailure(h: HostHealth, kind: LocalFailure): void {
    if (!this.settings.splitLocalOrigin) return this.httpStatus(h, kind === 'timeout' ? 504 : 503);
    if (++h.consecutiveLocalOriginFailure === this.settings.consecutiveLocalOriginFailure) this.#consecutive(h, 'consecutive_local_origin_failure');
  }

  #consecutive(h: HostHealth, kind: EjectionKind): void {
    if (!h.ejected) this.#eject(h, kind);
    // Reset so that a new bout of errors is detected even without a success in between.
    if (kind === 'consecutive_5xx') h.consecutive5xx = 0;
    else if (kind === 'consecutive_gateway_failure') h.consecutiveGatewayFailure = 0;
    else h.consecutiveLocalOriginFailure = 0;
  }

  #eject(h: HostHealth, kind: EjectionKind): void {
    const s = this.settings;
    // Current Envoy: never more than max_ejection_percent of the hosts (Istio does not set
    // always_eject_one_host, so with the default 10% a cluster of fewer than 10 hosts ejects none).
    if ((100 * (this.ejectedCount + 1)) / Math.max(1, this.hosts.size) > s.maxEjectionPercent) {
      this.ejectionsOverflow++;
      return;
    }
    const enforcing = kind === 'consecutive_5xx' ? s.enforcing5xx : kind === 'consecutive_gateway_failure' ? s.enforcingGatewayFailure : 100;
    if (enforcing < 100 && this.#random() * 100 >= enforcing) return;
    h.ejected = true;
    h.numEjections++;
    h.lastEjectionTime = this.#now();
    if (h.ejectTimeBackoff * s.baseEjectionMs < s.maxEjectionMs + s.baseEjectionMs) h.ejectTimeBackoff++;
    this.ejectedCount++;
    this.ejectionsEnforced++;
    this.#onChange();
  }

  /** The interval sweep: return hosts whose time is up, decay the backoff of healthy ones. */
  tick(): void {
    const now = this.#now();
    const s = this.settings;
    let changed = false;
    for (const h of this.hosts.values()) {
      if (h.ejected) {
        if (Math.min(s.baseEjectionMs * h.ejectTimeBackoff, s.maxEjectionMs) <= now - h.lastEjectionTime) {
          h.ejected = false;
          h.consecutive5xx = 0;
          h.consecutiveGatewayFailure = 0;
          h.consecutiveLocalOriginFailure = 0;
          h.lastUnejectionTime = now;
          this.ejectedCount--;
          changed = true;
        }
      } else if (h.lastUnejectionTime >= 0 && now - h.lastUnejectionTime >= s.intervalMs && h.ejectTimeBackoff > 0) {
        h.ejectTimeBackoff--;
      }
    }
    if (changed) this.#onChange();
  }

  /** Recount after hosts were added to or removed from the map. */
  recount(): void {
    let n = 0;
    for (const h of this.hosts.values()) if (h.ejected) n++;
    this.ejectedCount = n;
  }
}
