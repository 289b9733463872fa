/** How long a charge counts: the window of a per-minute limit. */
export const WINDOW_MS = 60_000;
const SECOND_MS = 1_000;

/** The charges made within one second: one sum per millisecond that had any, oldest first. */
interface Second {
  second: number;
  sum: number;
  at: number[];
  tokens: number[];
  /** The first millisecond still in the window. */
  first: number;
}

/**
 * The tokens one scope (an org, or one of its users) was charged in the last 60 s, kept so that
 * every operation an admission makes costs O(1) amortised, however many requests the window holds:
 *
 * - a running total, so "does this fit" is one comparison;
 * - charges summed per millisecond and, above that, per second, oldest first, so expiry pops
 *   each millisecond once, and the wait for room walks at most the 61 seconds of the window and
 *   the milliseconds of one of them (only a refused request asks);
 * - a charge is found again by its millisecond (binary search) when its request ends and its
 *   reservation is replaced by what it used.
 *
 * Times must not go backwards: the gate hands out a monotonic clock.
 */
export class TokenWindow {
  readonly #seconds: Second[] = [];
  #head = 0;
  #total = 0;

  /** The tokens charged within the window, as of the last {@link expire}. */
  get total(): number {
    return this.#total;
  }

  /** Drops what was charged at or before `now - WINDOW_MS`. */
  expire(now: number): void {
    const cutoff = now - WINDOW_MS;
    const seconds = this.#seconds;
    while (this.#head < seconds.length) {
      const second = seconds[this.#head]!;
      while (second.first < second.at.length && second.at[second.first]! <= cutoff) {
        second.sum -= second.tokens[second.first]!;
        this.#total -= second.tokens[second.first]!;
        second.first++;
      }
      if (second.first < second.at.length) break;
      this.#head++;
    }
    // Spent seconds are cut off now and then, not one by one: amortised O(1).
    if (this.#head > 64 && this.#head * 2 > seconds.length) {
      seconds.splice(0, this.#head);
      this.#head = 0;
    }
  }

  /** Charges `tokens` at `at`, no earlier than the last charge. */
  charge(at: number, tokens: number): void {
    const second = Math.floor(at / SECOND_MS);
    let last = this.#seconds.length > this.#head ? this.#seconds[this.#seconds.length - 1]! : undefined;
    if (!last || last.second !== second) {
      last = { second, sum: 0, at: [], tokens: [], first: 0 };
      this.#seconds.push(last);
    }
    const newest = last.at.length - 1;
    if (newest >= last.first && last.at[newest] === at) last.tokens[newest]! += tokens;
    else {
      last.at.push(at);
      last.tokens.push(tokens);
    }
    last.sum += tokens;
    this.#total += tokens;
  }

  /**
   * Changes the charge made at `at` by `delta` (never below nothing), if that charge is still in
   * the window; false if it is not.
   */
  adjust(at: number, delta: number): boolean {
    const second = this.#find(Math.floor(at / SECOND_MS));
    if (!second) return false;
    const i = search(second.at, at, second.first);
    if (i < 0) return false;
    const change = Math.max(delta, -second.tokens[i]!);
    second.tokens[i]! += change;
    second.sum += change;
    this.#total += change;
    return true;
  }

  /**
   * Milliseconds from `now` until `tokens` more fit within `limit`, or 0 if they fit now: the time
   * at which enough of the oldest charges have left the window. `tokens` must not exceed `limit`.
   */
  waitFor(tokens: number, limit: number, now: number): number {
    const excess = this.#total + tokens - limit;
    if (excess <= 0) return 0;
    let expired = 0;
    for (let s = this.#head; s < this.#seconds.length; s++) {
      const second = this.#seconds[s]!;
      if (expired + second.sum < excess) {
        expired += second.sum;
        continue;
      }
      for (let i = second.first; i < second.at.length; i++) {
        expired += second.tokens[i]!;
        if (expired >= excess) return second.at[i]! + WINDOW_MS - now;
      }
    }
    // Unreachable while `tokens <= limit`; never read as room.
    return WINDOW_MS;
  }

  /** The live second `second`, by binary search. */
  #find(second: number): Second | undefined {
    let lo = this.#head;
    let hi = this.#seconds.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const found = this.#seconds[mid]!;
      if (found.second === second) return found;
      if (found.second < second) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }
}

/** The index of `value` in the sorted `values` from `from` on, or -1. */
function search(values: number[], value: number, from: number): number {
  let lo = from;
  let hi = values.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (values[mid] === value) return mid;
    if (values[mid]! < value) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}
