/**
 * An upstream base: an http(s) URL with no credentials, query or fragment (the gateway appends a
 * path to it), and no whitespace the URL parser would quietly trim. Trailing slashes are dropped.
 * Undefined when `value` is not one.
 */
export function upstreamBase(value: string | undefined): string | undefined {
  let url: URL | undefined;
  try {
    url = value && value.trim() === value ? new URL(value) : undefined;
  } catch {
    return undefined;
  }
  const usable =
    url &&
    (url.protocol === "http:" || url.protocol === "https:") &&
    !url.username &&
    !url.password &&
    !url.search &&
    !url.hash &&
    !value!.includes("?") &&
    !value!.includes("#");
  return usable ? `${url!.origin}${url!.pathname}`.replace(/\/+$/, "") : undefined;
}
