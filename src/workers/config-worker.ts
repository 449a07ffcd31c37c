// The configuration thread: runs reload jobs (config-job.ts) off the thread that serves requests.
import { parentPort } from 'node:worker_threads';
import { runConfigJob, type ConfigJob } from './config-job.js';

parentPort?.on('message', (m: { id: number; job: ConfigJob }) => {
  try {
    parentPort!.postMessage({ id: m.id, result: runConfigJob(m.job) });
  } catch (err) {
    parentPort!.postMessage({ id: m.id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
});
