// The daily chores: keys (mint, revoke), models, groups, org limits and budgets, and the upstreams
// (read only; their keys are Worker secrets the API never returns). Each change is one API call:
// it happens whole or not at all, and a refusal is shown with the API's message. Empty fields are
// left out of the body (JSON has no undefined), so they clear what they stand for.
import { byId, el, field, fillTable } from "./dom.js";

/** @typedef {import("./console.js").Session} Session */
/** @typedef {{ id: string, invalid?: true, problem?: string, [field: string]: any }} Listed */

/** @type {Session | null} */
let session = null;

/**
 * Runs `action` with the current session's API: its errors shown, its result or undefined.
 *
 * @template T
 * @param {(admin: Session["admin"]) => Promise<T>} action
 * @returns {Promise<T | undefined>}
 */
async function run(action) {
  const current = session;
  return current ? current.run(() => action(current.admin)) : undefined;
}

/** Calls `handler` on submit, once the browser's own checks pass. */
function onSubmit(/** @type {string} */ id, /** @type {(form: HTMLFormElement) => Promise<void>} */ handler) {
  const form = byId(id, HTMLFormElement);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void handler(form);
  });
}

const button = (/** @type {string} */ label, /** @type {() => void} */ onClick) => {
  const node = el("button", { type: "button" }, label);
  node.addEventListener("click", onClick);
  return node;
};

/** A stored record that fails its schema is listed with the reason, so the operator can fix it. */
const problem = (/** @type {Listed} */ item) => (item.invalid ? `invalid: ${item.problem}` : undefined);

/** A form field's text, or undefined when empty. */
const text = (/** @type {HTMLFormElement} */ form, /** @type {string} */ name) =>
  field(form, name).value.trim() || undefined;
/** A form field's number, or undefined when empty. */
const number = (/** @type {HTMLFormElement} */ form, /** @type {string} */ name) => {
  const value = field(form, name).value;
  return value === "" ? undefined : Number(value);
};

// Keys

async function loadKeys() {
  const org = text(byId("keys-filter", HTMLFormElement), "org");
  const [keys, groups] = (await run((admin) => Promise.all([admin.listKeys(org), admin.listGroups()]))) ?? [];
  if (!keys || !groups) return;
  const select = byId("group-select", HTMLSelectElement);
  const chosen = select.value;
  select.replaceChildren(
    ...groups.data.map((/** @type {Listed} */ group) => el("option", { value: group.id }, group.id)),
  );
  if (chosen) select.value = chosen;
  fillTable(
    byId("keys-table", HTMLTableElement),
    [
      ["Key", (key) => key.id ?? key.hash],
      ["Org", (key) => key.org],
      ["User", (key) => key.user],
      ["Group", (key) => key.group],
      ["Name", (key) => key.name ?? problem(key)],
      ["Created", (key) => key.created_at],
      ["Revoked", (key) => key.revoked_at],
      ["", (key) => (key.id && !key.revoked_at ? button("Revoke", () => void revoke(key)) : undefined)],
    ],
    /** @type {Listed[]} */ (keys.data),
  );
}

async function revoke(/** @type {Listed} */ key) {
  const who = [key.user, key.name].filter(Boolean).join(", ");
  if (!confirm(`Revoke key ${key.id} (${who})? Its next request gets 401; this cannot be undone.`)) return;
  if (await run((admin) => admin.revokeKey(key.id))) await loadKeys();
}

onSubmit("mint-form", async (form) => {
  const fields = {
    org: text(form, "org"),
    user: text(form, "user"),
    group: text(form, "group"),
    name: text(form, "name"),
  };
  const created = await run((admin) => admin.createKey(fields));
  if (!created) return;
  byId("minted-key", HTMLElement).textContent = created.key;
  byId("minted", HTMLElement).hidden = false;
  field(form, "user").value = "";
  field(form, "name").value = "";
  await loadKeys();
  await session?.refreshOrgs();
});
byId("copy-key", HTMLButtonElement).addEventListener("click", () => {
  void navigator.clipboard.writeText(byId("minted-key", HTMLElement).textContent ?? "");
});
byId("dismiss-key", HTMLButtonElement).addEventListener("click", () => {
  byId("minted-key", HTMLElement).textContent = "";
  byId("minted", HTMLElement).hidden = true;
});
onSubmit("keys-filter", loadKeys);

/** @param {Session} current */
export function openKeys(current) {
  session = current;
  void loadKeys();
}

// Models

/** @type {Map<string, Listed>} */
let models = new Map();

const price = (/** @type {Listed} */ model, /** @type {string} */ name) => model.pricing?.[name];

async function loadModels() {
  const listed = await run((admin) => admin.listModels());
  if (!listed) return;
  models = new Map(listed.data.map((/** @type {Listed} */ model) => [model.id, model]));
  fillTable(
    byId("models-table", HTMLTableElement),
    [
      ["Model", (model) => model.id],
      ["Display name", (model) => model.display_name ?? problem(model)],
      ["Upstream model", (model) => model.upstream_model],
      ["Input $/Mtok", (model) => price(model, "input_per_mtok")],
      ["Cached input $/Mtok", (model) => price(model, "cached_input_per_mtok")],
      ["Output $/Mtok", (model) => price(model, "output_per_mtok")],
      [
        "Upstreams",
        (model) =>
          (model.upstreams ?? [])
            .map((/** @type {{ upstream: string, model?: string, weight?: number }} */ target) =>
              [
                target.upstream,
                target.model && `:${target.model}`,
                target.weight && ` (weight ${target.weight})`,
              ]
                .filter(Boolean)
                .join(""),
            )
            .join(", ") || "default",
      ],
      ["Routing", (model) => model.routing ?? (model.invalid ? "" : "fallback")],
      ["", (model) => button("Edit", () => editModel(model))],
    ],
    [...models.values()],
  );
}

function editModel(/** @type {Listed} */ model) {
  const form = byId("model-form", HTMLFormElement);
  field(form, "id").value = model.id;
  for (const name of ["display_name", "upstream_model"]) field(form, name).value = model[name] ?? "";
  for (const name of ["input_per_mtok", "cached_input_per_mtok", "output_per_mtok"])
    field(form, name).value = String(price(model, name) ?? "");
}

onSubmit("model-form", async (form) => {
  const id = /** @type {string} */ (text(form, "id"));
  // A model's upstreams and routing are kept as they are: the form changes names and prices.
  const { id: _, invalid, problem: __, ...stored } = models.get(id) ?? { id };
  const prices = {
    input_per_mtok: number(form, "input_per_mtok"),
    output_per_mtok: number(form, "output_per_mtok"),
    cached_input_per_mtok: number(form, "cached_input_per_mtok"),
  };
  const record = {
    ...(invalid ? {} : stored),
    display_name: text(form, "display_name"),
    upstream_model: text(form, "upstream_model"),
    pricing: Object.values(prices).some((value) => value !== undefined) ? prices : undefined,
  };
  if (await run((admin) => admin.putModel(id, record))) {
    form.reset();
    await loadModels();
  }
});

/** @param {Session} current */
export function openModels(current) {
  session = current;
  void loadModels();
}

// Groups

async function loadGroups() {
  const listed = await run((admin) => admin.listGroups());
  if (!listed) return;
  fillTable(
    byId("groups-table", HTMLTableElement),
    [
      ["Group", (group) => group.id],
      ["Models", (group) => group.models?.join(", ") ?? problem(group)],
      [
        "",
        (group) =>
          button("Edit", () => {
            const form = byId("group-form", HTMLFormElement);
            field(form, "id").value = group.id;
            field(form, "models").value = group.models?.join(", ") ?? "";
          }),
      ],
    ],
    /** @type {Listed[]} */ (listed.data),
  );
}

onSubmit("group-form", async (form) => {
  const id = /** @type {string} */ (text(form, "id"));
  const granted = field(form, "models")
    .value.split(",")
    .map((model) => model.trim())
    .filter(Boolean);
  if (await run((admin) => admin.putGroup(id, granted))) {
    form.reset();
    await loadGroups();
  }
});

/** @param {Session} current */
export function openGroups(current) {
  session = current;
  void loadGroups();
}

// Orgs

const LIMITS = [
  "requests_per_minute",
  "user_requests_per_minute",
  "tokens_per_minute",
  "user_tokens_per_minute",
  "monthly_budget_usd",
  "user_monthly_budget_usd",
];

/** The org whose limits the form shows. */
let orgShown = "";

onSubmit("org-load", async (form) => {
  const id = /** @type {string} */ (text(form, "org"));
  const org = await run((admin) => admin.getOrg(id));
  if (!org) return;
  orgShown = id;
  const limits = byId("org-form", HTMLFormElement);
  for (const name of LIMITS) field(limits, name).value = String(org[name] ?? "");
  limits.hidden = false;
});

onSubmit("org-form", async (form) => {
  const limits = Object.fromEntries(LIMITS.map((name) => [name, number(form, name)]));
  await run((admin) => admin.putOrg(orgShown, limits));
});

/** @param {Session} current */
export function openOrgs(current) {
  session = current;
}

// Upstreams

/** @param {Session} current */
export async function openUpstreams(current) {
  session = current;
  const listed = await run((admin) => admin.listUpstreams());
  if (!listed) return;
  fillTable(
    byId("upstreams-table", HTMLTableElement),
    [
      ["Upstream", (upstream) => upstream.id],
      ["Base URL", (upstream) => upstream.base_url ?? problem(upstream)],
      ["Auth", (upstream) => upstream.auth ?? (upstream.invalid ? "" : "bearer")],
      ["Key from secret", (upstream) => upstream.api_key_secret],
      [
        "Fixed headers",
        (upstream) =>
          Object.entries(upstream.headers ?? {})
            .map(([name, value]) => `${name}: ${value}`)
            .join(", "),
      ],
      ["Timeout (ms)", (upstream) => upstream.timeout_ms],
    ],
    /** @type {Listed[]} */ (listed.data),
  );
}
