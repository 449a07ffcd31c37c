// HTTP-01 challenge answers of the ACME orders in progress: token → key authorization. Every
// plaintext HTTP listener answers `/.well-known/acme-challenge/<token>` from here before routing.
export const ACME_CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

export const acmeChallenges = new Map<string, string>();
