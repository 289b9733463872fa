/**
 * Finding the top-level keys of a JSON object's text, without parsing its values.
 *
 * `JSON.parse` keeps the last of two equal keys and forgets the first, while other parsers (an
 * upstream's) may keep the first. So what the gateway checks (`model`, `stream`) is read from the
 * text as well: a key it interprets may appear once, and a renamed model is written into the
 * caller's own bytes at exactly its place, leaving every other byte as sent.
 */

/**
 * The next quote or bracket. Everything between (numbers, literals, commas, colons, whitespace) is
 * skipped by the search itself, natively; strings are then skipped with `indexOf`, which needs no
 * backtracking (a pattern matching whole strings ran out of stack on bodies with millions of
 * escapes).
 */
const STRUCTURE = /["{}[\]]/g;
const SPACE = /[ \t\n\r]*/y;

/** The offset just past the string whose opening quote is at `start`. */
function stringEnd(text: string, start: number): number {
  let quote = text.indexOf('"', start + 1);
  for (;;) {
    // A quote preceded by an odd number of backslashes is escaped.
    let slashes = 0;
    while (text.charCodeAt(quote - 1 - slashes) === 0x5c) slashes++;
    if (slashes % 2 === 0) return quote + 1;
    quote = text.indexOf('"', quote + 1);
  }
}

/** Where a top-level key's value lies in the text: `[start, end)`; `end` is known for strings only. */
export interface KeyPlace {
  key: string;
  /** The offset of the key's opening quote. */
  keyStart: number;
  /** The offset of the value's first character. */
  start: number;
  /** The offset just past a string value; -1 for any other value. */
  end: number;
}

/** The offset of the first character at or after `from` that is not JSON whitespace. */
export function skipSpace(text: string, from: number): number {
  SPACE.lastIndex = from;
  SPACE.exec(text);
  return SPACE.lastIndex;
}

/**
 * Every top-level key of the JSON object `text` that is in `wanted`, in order, with where its value
 * lies. Keys are compared after their escapes are decoded (`"mod\u0065l"` is `model`). The text
 * must already be known to be valid JSON.
 *
 * @example
 * topLevelKeys('{"model":"a","model":"b"}', new Set(["model"])).length; // 2
 */
export function topLevelKeys(text: string, wanted: ReadonlySet<string>): KeyPlace[] {
  const found: KeyPlace[] = [];
  let depth = 0;
  STRUCTURE.lastIndex = 0;
  for (let match = STRUCTURE.exec(text); match; match = STRUCTURE.exec(text)) {
    const at = match.index;
    const char = text.charCodeAt(at);
    if (char !== 0x22) {
      depth += char === 0x7b || char === 0x5b ? 1 : -1;
      continue;
    }
    const end = stringEnd(text, at);
    STRUCTURE.lastIndex = end;
    if (depth !== 1) continue;
    const after = skipSpace(text, end);
    // A string at depth 1 followed by a colon is a key; any other is a value.
    if (text.charCodeAt(after) !== 0x3a) continue;
    const lexeme = text.slice(at, end);
    const key = lexeme.includes("\\") ? (JSON.parse(lexeme) as string) : lexeme.slice(1, -1);
    if (!wanted.has(key)) continue;
    const start = skipSpace(text, after + 1);
    found.push({
      key,
      keyStart: at,
      start,
      end: text.charCodeAt(start) === 0x22 ? stringEnd(text, start) : -1,
    });
  }
  return found;
}

/**
 * The offset just past the value that starts at `start` in valid JSON `text`: a string, an object
 * or an array (brackets counted, strings skipped), or a literal or number (up to the next
 * delimiter).
 *
 * @example
 * valueEnd('{"a":{"b":[1]},"c":2}', 5); // 14
 */
export function valueEnd(text: string, start: number): number {
  const first = text.charCodeAt(start);
  if (first === 0x22) return stringEnd(text, start);
  if (first !== 0x7b && first !== 0x5b) {
    DELIMITER.lastIndex = start;
    return DELIMITER.exec(text) ? DELIMITER.lastIndex - 1 : text.length;
  }
  let depth = 0;
  STRUCTURE.lastIndex = start;
  for (let match = STRUCTURE.exec(text); match; match = STRUCTURE.exec(text)) {
    const at = match.index;
    const char = text.charCodeAt(at);
    if (char === 0x22) STRUCTURE.lastIndex = stringEnd(text, at);
    else if ((depth += char === 0x7b || char === 0x5b ? 1 : -1) === 0) return at + 1;
  }
  return text.length;
}

const DELIMITER = /[,}\] \t\n\r]/g;
