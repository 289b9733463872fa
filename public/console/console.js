// The console's entry: the admin token, the views and where errors are shown. The token lives in
// this tab's sessionStorage only; every call goes through the CLI's admin client (lib/, copied
// from scripts/ at build time) as `Authorization: Bearer`.
import { AdminClient } from "./lib/admin-client.mjs";
import { byId, el, field } from "./dom.js";
import { openUsage } from "./usage.js";
import { openGroups, openKeys, openModels, openOrgs, openUpstreams } from "./manage.js";

const TOKEN = "gateway-admin-token";

/** What a view gets: the API, a way to run a change with its errors shown, and the known orgs. */
export class Session {
  /** @param {AdminClient} admin */
  constructor(admin) {
    this.admin = admin;
  }

  /**
   * Runs one API action; its failure is shown with the API's message (and code and param), and
   * nothing after the failed call runs. A refused token ends the session.
   *
   * @template T
   * @param {() => Promise<T>} action
   * @returns {Promise<T | undefined>}
   */
  async run(action) {
    showError(null);
    try {
      return await action();
    } catch (error) {
      showError(describe(error));
      if (/** @type {{ status?: number }} */ (error).status === 401) logOut(false);
      return undefined;
    }
  }

  /** Offers every org that has a key in the org fields. */
  async refreshOrgs() {
    const keys = await this.run(() => this.admin.listKeys());
    if (!keys) return;
    const orgs = [...new Set(keys.data.map((/** @type {{ org?: string }} */ key) => key.org))].filter(
      Boolean,
    );
    byId("known-orgs", HTMLDataListElement).replaceChildren(
      ...orgs.sort().map((org) => el("option", { value: org })),
    );
  }
}

/** An API error as the CLI words it: the message, then its code and param when there are. */
function describe(/** @type {any} */ error) {
  const detail = [error.code, error.param && `param ${error.param}`].filter(Boolean).join(", ");
  return detail ? `${error.message} (${detail})` : String(error.message ?? error);
}

function showError(/** @type {string | null} */ message) {
  const banner = byId("error", HTMLElement);
  banner.textContent = message ?? "";
  banner.hidden = message === null;
}

const VIEWS = {
  usage: openUsage,
  keys: openKeys,
  models: openModels,
  groups: openGroups,
  orgs: openOrgs,
  upstreams: openUpstreams,
};

/** @type {Session | null} */
let session = null;

function show(/** @type {keyof typeof VIEWS} */ view) {
  for (const section of document.querySelectorAll("section.view")) {
    /** @type {HTMLElement} */ (section).hidden = section.id !== view;
  }
  for (const button of document.querySelectorAll("#nav [data-view]")) {
    button.setAttribute("aria-current", String(button.getAttribute("data-view") === view));
  }
  if (session) VIEWS[view](session);
}

/** Tries the token against the API; only a token the API accepts is kept, and only in this tab. */
async function logIn(/** @type {string} */ token) {
  const candidate = new Session(new AdminClient(location.origin, token));
  const accepted = await candidate.run(() => candidate.admin.listUpstreams());
  if (!accepted) return;
  sessionStorage.setItem(TOKEN, token);
  session = candidate;
  await session.refreshOrgs();
  byId("login", HTMLFormElement).hidden = true;
  byId("nav", HTMLElement).hidden = false;
  show("usage");
}

/** Forgets the token and everything shown with it. */
function logOut(clearError = true) {
  sessionStorage.removeItem(TOKEN);
  session = null;
  if (clearError) showError(null);
  for (const section of document.querySelectorAll("section.view")) {
    /** @type {HTMLElement} */ (section).hidden = true;
  }
  for (const table of document.querySelectorAll("table")) table.replaceChildren();
  byId("minted", HTMLElement).hidden = true;
  byId("minted-key", HTMLElement).textContent = "";
  byId("nav", HTMLElement).hidden = true;
  byId("login", HTMLFormElement).hidden = false;
}

byId("login", HTMLFormElement).addEventListener("submit", (event) => {
  event.preventDefault();
  const input = field(byId("login", HTMLFormElement), "token");
  const token = input.value;
  input.value = "";
  void logIn(token);
});
byId("logout", HTMLButtonElement).addEventListener("click", () => logOut());
for (const button of document.querySelectorAll("#nav [data-view]")) {
  button.addEventListener("click", () =>
    show(/** @type {keyof typeof VIEWS} */ (button.getAttribute("data-view"))),
  );
}

const saved = sessionStorage.getItem(TOKEN);
if (saved) void logIn(saved);
