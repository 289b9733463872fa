// A small client for the gateway's admin API, shared by the CLI (`npm run admin`) and `npm run dev`.

/** An admin API error, carrying the gateway's typed envelope. */
export class AdminError extends Error {
  constructor(status, error) {
    const message = typeof error === "string" ? error : (error?.message ?? `HTTP ${status}`);
    super(message);
    this.status = status;
    this.code = typeof error === "object" ? (error?.code ?? null) : null;
    this.param = typeof error === "object" ? (error?.param ?? null) : null;
  }
}

/**
 * @example
 * const admin = new AdminClient("http://localhost:8787", process.env.ADMIN_TOKEN);
 * const { key } = await admin.createKey({ org: "acme", user: "alice", group: "default" });
 */
export class AdminClient {
  constructor(baseUrl, token) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.token = token;
  }

  async call(method, path, body) {
    let response;
    try {
      response = await fetch(`${this.baseUrl}/admin${path}`, {
        method,
        headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (cause) {
      throw new AdminError(
        0,
        `cannot reach the gateway at ${this.baseUrl} (${cause.cause?.code ?? cause.cause?.message ?? cause.message})`,
      );
    }
    const text = await response.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      throw new AdminError(
        response.status,
        `unexpected response (HTTP ${response.status}): ${text.slice(0, 200)}`,
      );
    }
    if (!response.ok) throw new AdminError(response.status, json.error);
    return json;
  }

  createKey(fields) {
    return this.call("POST", "/keys", fields);
  }
  listKeys(org) {
    return this.call("GET", org ? `/keys?org=${encodeURIComponent(org)}` : "/keys");
  }
  revokeKey(id) {
    return this.call("DELETE", `/keys/${encodeURIComponent(id)}`);
  }
  listModels() {
    return this.call("GET", "/models");
  }
  putModel(id, record) {
    // Model ids may hold slashes, which the route keeps as path segments.
    return this.call("PUT", `/models/${id.split("/").map(encodeURIComponent).join("/")}`, record);
  }
  deleteModel(id) {
    return this.call("DELETE", `/models/${id.split("/").map(encodeURIComponent).join("/")}`);
  }
  listGroups() {
    return this.call("GET", "/groups");
  }
  putGroup(id, models) {
    return this.call("PUT", `/groups/${encodeURIComponent(id)}`, { models });
  }
  deleteGroup(id) {
    return this.call("DELETE", `/groups/${encodeURIComponent(id)}`);
  }
  getOrg(id) {
    return this.call("GET", `/orgs/${encodeURIComponent(id)}`);
  }
  putOrg(id, limits) {
    return this.call("PUT", `/orgs/${encodeURIComponent(id)}`, limits);
  }
  listUpstreams() {
    return this.call("GET", "/upstreams");
  }
  putUpstream(id, record) {
    return this.call("PUT", `/upstreams/${encodeURIComponent(id)}`, record);
  }
  deleteUpstream(id) {
    return this.call("DELETE", `/upstreams/${encodeURIComponent(id)}`);
  }
  /** The org's usage report; `query` may hold `from`, `to` and `group_by`. */
  usage(org, query = {}) {
    const search = new URLSearchParams(query).toString();
    return this.call("GET", `/orgs/${encodeURIComponent(org)}/usage${search ? `?${search}` : ""}`);
  }
}
