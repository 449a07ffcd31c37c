// The bench's upstream child (bench/lib/upstream.ts): started by the bench with the same tsx
// loader flags, it listens on 127.0.0.1 and reports its ports over IPC. Not meant to be run by
// hand.
import { serveUpstream } from './lib/upstream.js';

serveUpstream();
