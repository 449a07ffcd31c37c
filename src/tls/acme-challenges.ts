// HTTP-01 challenge answers of the ACME orders in progress: token → key authorization. Every
// plaintext HTTP listener answers `/.well-known/acme-challenge/<token>` from here before routing.
export const ACME_CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

/** A Map that reports changes: with `--workers N` the main thread copies it to every worker. */
class ChallengeMap extends Map<string, string> {
  onChange: (() => void) | null = null;
  override set(token: string, answer: string): this {
    super.set(token, answer);
    this.onChange?.();
    return this;
  }
  override delete(token: string): boolean {
    const had = super.delete(token);
    if (had) this.onChange?.();
    return had;
  }
}

export const acmeChallenges = new ChallengeMap();
