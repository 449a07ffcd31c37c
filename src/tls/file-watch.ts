// Watches the certificate files the current configuration names (they live outside the config
// folders); a burst of changes (cert, then key) becomes one callback, debounced.
import { watch, type FSWatcher } from 'chokidar';

const DEBOUNCE_MS = 150;

export class CertFileWatcher {
  readonly #onChange: () => void;
  #watcher: FSWatcher | null = null;
  #files = new Set<string>();
  #timer: NodeJS.Timeout | null = null;

  constructor(onChange: () => void) {
    this.#onChange = onChange;
  }

  /** Watches exactly these files from now on. */
  async set(files: readonly string[]): Promise<void> {
    const next = new Set(files);
    const add = [...next].filter((f) => !this.#files.has(f));
    const remove = [...this.#files].filter((f) => !next.has(f));
    this.#files = next;
    if (add.length === 0 && remove.length === 0) return;
    if (!this.#watcher) {
      if (next.size === 0) return;
      this.#watcher = watch([...next], { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: 60, pollInterval: 20 } });
      this.#watcher.on('all', () => this.#changed());
      await new Promise<void>((resolve) => this.#watcher!.once('ready', () => resolve()));
      return;
    }
    if (remove.length > 0) this.#watcher.unwatch(remove);
    if (add.length > 0) this.#watcher.add(add);
  }

  #changed(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#onChange();
    }, DEBOUNCE_MS);
  }

  async close(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    await this.#watcher?.close();
    this.#watcher = null;
  }
}
