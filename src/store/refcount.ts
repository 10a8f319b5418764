/**
 * Counts per key that drop the key at zero: the store's leases (NVMe slots
 * held by hits, slots being read) and its tallies (commits per key).
 */
export class RefCount<K> {
  readonly #counts = new Map<K, number>();

  /** Adds `n` (default 1) to `key`'s count; returns the new count. */
  add(key: K, n = 1): number {
    const count = (this.#counts.get(key) ?? 0) + n;
    this.#counts.set(key, count);
    return count;
  }

  /** Takes one from `key`'s count, forgetting the key at zero; returns what is left. */
  release(key: K): number {
    const count = (this.#counts.get(key) ?? 1) - 1;
    if (count <= 0) this.#counts.delete(key);
    else this.#counts.set(key, count);
    return Math.max(0, count);
  }

  get(key: K): number {
    return this.#counts.get(key) ?? 0;
  }

  has(key: K): boolean {
    return this.#counts.has(key);
  }

  get size(): number {
    return this.#counts.size;
  }

  keys(): IterableIterator<K> {
    return this.#counts.keys();
  }

  /** Forgets the key counted first (the oldest): bounds a tally. */
  dropOldest(): void {
    const first = this.#counts.keys().next();
    if (!first.done) this.#counts.delete(first.value);
  }
}
