// The Worker's log lines as the tests see them. Test files can share an isolate with the Worker and
// with each other, so console.log is wrapped once per isolate and never restored: a file that put
// back "its" original, or a spy's mockRestore, would silently cut off the lines of a file still
// running (a log-line wait then timed out, depending on which file finished first).

type Listener = (line: string) => void;

const TAP = Symbol.for("edge-llm-gateway.test.log-tap");

function listeners(): Set<Listener> {
  const scope = globalThis as { [TAP]?: Set<Listener> };
  let set = scope[TAP];
  if (!set) {
    const tapped = (set = scope[TAP] = new Set());
    const write = console.log.bind(console);
    console.log = (...args: unknown[]) => {
      const line = args.map(String).join(" ");
      for (const listener of tapped) listener(line);
      write(...args);
    };
  }
  return set;
}

/**
 * Calls `listener` with each log line written from now on; returns the function that stops it.
 *
 * @example
 * const stop = onLogLine((line) => lines.push(line));
 */
export function onLogLine(listener: Listener): () => void {
  const set = listeners();
  set.add(listener);
  return () => set.delete(listener);
}
