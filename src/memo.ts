/**
 * Values derived from their key alone that never change (a digest, a Durable Object id), kept for
 * the isolate's life. At most `max` are kept; when that many are, all are forgotten at once, which
 * bounds the memory without an LRU's bookkeeping.
 *
 * Only settled values go in, never a promise: a promise made in one request and awaited in another
 * has its continuations cancelled when the first request ends.
 *
 * @example
 * const hashes = new Memo<string>(1000);
 * const hash = hashes.get(key) ?? hashes.set(key, await hashKey(key));
 */
export class Memo<V> {
  readonly #kept = new Map<string, V>();

  constructor(private readonly max: number) {}

  get(key: string): V | undefined {
    return this.#kept.get(key);
  }

  /** Keeps `value` under `key` and returns it. */
  set(key: string, value: V): V {
    if (this.#kept.size >= this.max) this.#kept.clear();
    this.#kept.set(key, value);
    return value;
  }
}
