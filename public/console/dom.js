// What every view of the console builds its page from. Data from the API only ever becomes text
// (textContent), never markup.

/**
 * An element with its attributes and children (strings become text).
 *
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, string>} [attributes]
 * @param {(Node | string)[]} children
 * @returns {HTMLElementTagNameMap[K]}
 * @example
 * el("button", { type: "button" }, "Revoke");
 */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/**
 * The element with this id, of the expected type.
 *
 * @template {typeof HTMLElement} T
 * @param {string} id
 * @param {T} type
 * @returns {InstanceType<T>}
 */
export function byId(id, type) {
  const node = document.getElementById(id);
  if (!(node instanceof type)) throw new Error(`#${id} is not a ${type.name}`);
  return /** @type {InstanceType<T>} */ (node);
}

/** A form's named control, as an input. */
export const field = (/** @type {HTMLFormElement} */ form, /** @type {string} */ name) =>
  /** @type {HTMLInputElement} */ (form.elements.namedItem(name));

/** A table cell's content: a node (a button) as it is, anything else as text. */
const asChild = (/** @type {Node | string | number | undefined} */ value) =>
  value instanceof Node ? value : String(value ?? "");

/**
 * Fills `table` with a header row and one row per item; a cell is text or a node (a button).
 *
 * @template T
 * @param {HTMLTableElement} table
 * @param {[heading: string, cell: (item: T) => Node | string | number | undefined][]} columns
 * @param {T[]} items
 */
export function fillTable(table, columns, items) {
  const head = el("thead", {}, el("tr", {}, ...columns.map(([heading]) => el("th", {}, heading))));
  const rows = items.map((item) =>
    el("tr", {}, ...columns.map(([, cell]) => el("td", {}, asChild(cell(item))))),
  );
  table.replaceChildren(head, el("tbody", {}, ...rows));
}

const dollars = new Intl.NumberFormat("en-US", {
  style: "currency",
  currency: "USD",
  minimumFractionDigits: 2,
  maximumFractionDigits: 6,
});
const counts = new Intl.NumberFormat("en-US");

/** `$0.000088`, `$12.50`: costs are often fractions of a cent. */
export const usd = (/** @type {number} */ value) => dollars.format(value);
/** `12,345`. */
export const count = (/** @type {number} */ value) => counts.format(value);
