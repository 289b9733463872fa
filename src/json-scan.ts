/**
 * Finding the top-level keys of a JSON object's text, without parsing its values.
 *
 * `JSON.parse` keeps the last of two equal keys and forgets the first, while other parsers (an
 * upstream's) may keep the first. So what the gateway checks (`model`, `stream`) is read from the
 * text as well: a key it interprets may appear once, and a renamed model is written into the
 * caller's own bytes at exactly its place, leaving every other byte as sent.
 */

/**
 * One token: a whole string (escapes included) or a bracket. Everything between tokens (numbers,
 * literals, commas, colons, whitespace) is skipped by the search itself, natively.
 */
const TOKEN = /"[^"\\]*(?:\\.[^"\\]*)*"|[{}[\]]/g;
const SPACE = /[ \t\n\r]*/y;

/** Where a top-level key's value lies in the text: `[start, end)`; `end` is known for strings only. */
export interface KeyPlace {
  key: string;
  /** The offset of the value's first character. */
  start: number;
  /** The offset just past a string value; -1 for any other value. */
  end: number;
}

function skipSpace(text: string, from: number): number {
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
  TOKEN.lastIndex = 0;
  for (let token = TOKEN.exec(text); token; token = TOKEN.exec(text)) {
    const lexeme = token[0];
    const first = lexeme.charCodeAt(0);
    if (first !== 0x22) {
      depth += first === 0x7b || first === 0x5b ? 1 : -1;
      continue;
    }
    if (depth !== 1) continue;
    const after = skipSpace(text, TOKEN.lastIndex);
    // A string at depth 1 followed by a colon is a key; any other is a value.
    if (text.charCodeAt(after) !== 0x3a) continue;
    const key = lexeme.includes("\\") ? (JSON.parse(lexeme) as string) : lexeme.slice(1, -1);
    if (!wanted.has(key)) continue;
    const start = skipSpace(text, after + 1);
    let end = -1;
    if (text.charCodeAt(start) === 0x22) {
      TOKEN.lastIndex = start;
      end = start + TOKEN.exec(text)![0].length;
    }
    found.push({ key, start, end });
  }
  return found;
}
