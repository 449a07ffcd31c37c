// Watches every --config path; a burst of changes becomes one reload, debounced.
import { watch, type FSWatcher } from 'chokidar';
import type { Stats } from 'node:fs';
import { basename, sep } from 'node:path';

const DEBOUNCE_MS = 100;

function ignored(path: string, stats?: Stats): boolean {
  // Kubernetes ConfigMap mounts swap a `..data` link to a new `..<timestamp>` folder.
  if (path.split(sep).some((seg) => seg.startsWith('..') && seg.length > 2)) return true;
  if (basename(path).startsWith('.') && basename(path) !== '.') return true;
  return stats?.isFile() === true && !/\.ya?ml$/i.test(path);
}

export class ConfigWatcher {
  readonly #watcher: FSWatcher;
  readonly #ready: Promise<void>;
  #timer: NodeJS.Timeout | null = null;

  constructor(paths: readonly string[], onChange: () => void) {
    this.#watcher = watch([...paths], {
      ignoreInitial: true,
      ignored,
      awaitWriteFinish: { stabilityThreshold: 60, pollInterval: 20 },
    });
    // Listened for at once: the scan may finish before anyone asks.
    this.#ready = new Promise((resolve) => this.#watcher.once('ready', () => resolve()));
    this.#watcher.on('all', () => {
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = setTimeout(() => {
        this.#timer = null;
        onChange();
      }, DEBOUNCE_MS);
    });
  }

  /** Resolves once the initial scan is done, so no change after it is missed. */
  ready(): Promise<void> {
    return this.#ready;
  }

  async close(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    await this.#watcher.close();
  }
}
