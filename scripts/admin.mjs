#!/usr/bin/env node
// `npm run admin -- <command>`: manage the gateway's keys, models, upstreams, groups, org limits and budgets,
// and read an org's usage.
import { parseArgs } from "node:util";
import { AdminClient, AdminError } from "./admin-client.mjs";

const HELP = `Usage: npm run admin -- <command> [options]

Keys
  keys create --org ORG --user USER --group GROUP [--name NAME]
                                    mint a key; it is shown once, here
  keys list [--org ORG]             list keys (never the key itself)
  keys revoke KEY_ID                revoke a key; it answers 401 from the next request on
Models
  models list
  models put ID [--display-name TEXT] [--upstream-model ID]
             [--input-price X --output-price X [--cached-input-price X]]
             [--upstreams UP[:MODEL],... [--routing fallback|loadbalance]]
                                    prices in US dollars per million tokens; the
                                    upstreams in the order they are tried
  models delete ID
Upstreams
  upstreams list                    "default" (UPSTREAM_BASE_URL) first; never a key
  upstreams put ID --base-url URL [--auth bearer|x-api-key|api-key|none] [--secret NAME]
             [--header K=V]... [--timeout-ms N]
                                    the key stays a Worker secret: wrangler secret put NAME
  upstreams delete ID               refused while a model routes to it
Groups
  groups list
  groups put ID --models ID,ID,...  ("*" grants every model)
  groups delete ID
Orgs
  orgs get ID
  orgs put ID [--rpm N] [--user-rpm N] [--tpm N] [--user-tpm N] [--budget USD] [--user-budget USD]
                                    requests and tokens per minute, monthly budgets in US
                                    dollars; for the org and for each of its users
Usage
  usage ORG [--from ISO] [--to ISO] [--by model,user,key,day,hour]
                                    tokens and cost per group, with totals (default: this
                                    month by model)

Options
  --json        print the API's JSON instead of a table
  --help        this text

Environment
  GATEWAY_URL   the gateway's base URL (default http://localhost:8787)
  ADMIN_TOKEN   the gateway's admin token (required)`;

/** @satisfies {import("node:util").ParseArgsOptionsConfig} */
const OPTIONS = {
  org: { type: "string" },
  user: { type: "string" },
  group: { type: "string" },
  name: { type: "string" },
  models: { type: "string" },
  "display-name": { type: "string" },
  "upstream-model": { type: "string" },
  upstreams: { type: "string" },
  routing: { type: "string" },
  "base-url": { type: "string" },
  auth: { type: "string" },
  secret: { type: "string" },
  header: { type: "string", multiple: true },
  "timeout-ms": { type: "string" },
  rpm: { type: "string" },
  "user-rpm": { type: "string" },
  tpm: { type: "string" },
  "user-tpm": { type: "string" },
  budget: { type: "string" },
  "user-budget": { type: "string" },
  "input-price": { type: "string" },
  "output-price": { type: "string" },
  "cached-input-price": { type: "string" },
  from: { type: "string" },
  to: { type: "string" },
  by: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
};

class UsageError extends Error {}

/** Options the caller gave, without the undefined ones, so the API sees only what was said. */
function defined(fields) {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
}

function required(values, name) {
  if (values[name] === undefined) throw new UsageError(`--${name} is required`);
  return values[name];
}

function argument(positionals, index, what) {
  const value = positionals[index];
  if (value === undefined) throw new UsageError(`${what} is required`);
  return value;
}

/** A number where the text is one; otherwise the text, for the API to refuse with its own message. */
const numberOrText = (text) =>
  text === undefined ? undefined : text.trim() !== "" && Number.isFinite(Number(text)) ? Number(text) : text;

/** The `pricing` of `models put`, when any price is given; the API says what is missing. */
function pricing(values) {
  const prices = defined({
    input_per_mtok: numberOrText(values["input-price"]),
    output_per_mtok: numberOrText(values["output-price"]),
    cached_input_per_mtok: numberOrText(values["cached-input-price"]),
  });
  return Object.keys(prices).length ? prices : undefined;
}

/** `--upstreams a,b:model-name` as a model's `upstreams`: each upstream id, and its model name if given. */
function targets(text) {
  if (text === undefined) return undefined;
  return text
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean)
    .map((item) => {
      const at = item.indexOf(":");
      return at < 0 ? { upstream: item } : { upstream: item.slice(0, at), model: item.slice(at + 1) };
    });
}

/** `--header K=V` (repeated) as an upstream's fixed `headers`. */
function fixedHeaders(pairs) {
  if (pairs === undefined) return undefined;
  return Object.fromEntries(
    pairs.map((pair) => {
      const at = pair.indexOf("=");
      if (at <= 0) throw new UsageError(`--header takes NAME=VALUE, not '${pair}'`);
      return [pair.slice(0, at), pair.slice(at + 1)];
    }),
  );
}

/** A model as a table row: its pricing flattened into columns, its upstreams as `up:model` text. */
const modelRow = ({ pricing: prices, upstreams, ...model }) => ({
  ...model,
  ...(upstreams
    ? { upstreams: upstreams.map((t) => (t.model ? `${t.upstream}:${t.model}` : t.upstream)).join(", ") }
    : {}),
  ...prices,
});

/** An upstream as a table row: its fixed headers as `K=V` text. */
const upstreamRow = ({ headers, ...upstream }) => ({
  ...upstream,
  ...(headers
    ? {
        headers: Object.entries(headers)
          .map(([k, v]) => `${k}=${v}`)
          .join(", "),
      }
    : {}),
});

/** The report's rows as a table, the total last in the first group's column. */
function usageRows(report) {
  const [first] = report.group_by.map((name) => (name === "key" ? "key_id" : name));
  return [...report.data, { [first]: "total", ...report.total }];
}

/** Each command: what to call, and how to show the answer as rows. */
const COMMANDS = {
  "keys create": (admin, values) =>
    admin
      .createKey(
        defined({
          org: required(values, "org"),
          user: required(values, "user"),
          group: required(values, "group"),
          name: values.name,
        }),
      )
      .then((key) => ({ json: key, rows: [key], note: "Store the key now: it is not shown again." })),
  "keys list": (admin, values) =>
    admin.listKeys(values.org).then((list) => ({ json: list, rows: list.data })),
  "keys revoke": (admin, _, args) =>
    admin.revokeKey(argument(args, 0, "KEY_ID")).then((key) => ({ json: key, rows: [key] })),
  "models list": (admin) =>
    admin.listModels().then((list) => ({ json: list, rows: list.data.map(modelRow) })),
  "models put": (admin, values, args) =>
    admin
      .putModel(
        argument(args, 0, "ID"),
        defined({
          display_name: values["display-name"],
          upstream_model: values["upstream-model"],
          pricing: pricing(values),
          upstreams: targets(values.upstreams),
          routing: values.routing,
        }),
      )
      .then((model) => ({ json: model, rows: [modelRow(model)] })),
  "models delete": (admin, _, args) =>
    admin.deleteModel(argument(args, 0, "ID")).then((r) => ({ json: r, rows: [r] })),
  "upstreams list": (admin) =>
    admin.listUpstreams().then((list) => ({ json: list, rows: list.data.map(upstreamRow) })),
  "upstreams put": (admin, values, args) =>
    admin
      .putUpstream(
        argument(args, 0, "ID"),
        defined({
          base_url: required(values, "base-url"),
          auth: values.auth,
          api_key_secret: values.secret,
          headers: fixedHeaders(values.header),
          timeout_ms: numberOrText(values["timeout-ms"]),
        }),
      )
      .then((upstream) => ({ json: upstream, rows: [upstreamRow(upstream)] })),
  "upstreams delete": (admin, _, args) =>
    admin.deleteUpstream(argument(args, 0, "ID")).then((r) => ({ json: r, rows: [r] })),
  "groups list": (admin) =>
    admin
      .listGroups()
      .then((list) => ({ json: list, rows: list.data.map((g) => ({ ...g, models: g.models.join(", ") })) })),
  "groups put": (admin, values, args) => {
    const models = required(values, "models")
      .split(",")
      .map((m) => m.trim())
      .filter(Boolean);
    return admin
      .putGroup(argument(args, 0, "ID"), models)
      .then((g) => ({ json: g, rows: [{ ...g, models: g.models.join(", ") }] }));
  },
  "groups delete": (admin, _, args) =>
    admin.deleteGroup(argument(args, 0, "ID")).then((r) => ({ json: r, rows: [r] })),
  "orgs get": (admin, _, args) =>
    admin.getOrg(argument(args, 0, "ID")).then((org) => ({ json: org, rows: [org] })),
  "orgs put": (admin, values, args) =>
    admin
      .putOrg(
        argument(args, 0, "ID"),
        defined({
          requests_per_minute: numberOrText(values.rpm),
          user_requests_per_minute: numberOrText(values["user-rpm"]),
          tokens_per_minute: numberOrText(values.tpm),
          user_tokens_per_minute: numberOrText(values["user-tpm"]),
          monthly_budget_usd: numberOrText(values.budget),
          user_monthly_budget_usd: numberOrText(values["user-budget"]),
        }),
      )
      .then((org) => ({ json: org, rows: [org] })),
  usage: (admin, values, args) =>
    admin
      .usage(argument(args, 0, "ORG"), defined({ from: values.from, to: values.to, group_by: values.by }))
      .then((report) => ({
        json: report,
        rows: usageRows(report),
        note: `${report.org}, from ${report.from} to ${report.to}`,
      })),
};

async function main(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    options: OPTIONS,
    allowPositionals: true,
    strict: true,
  });
  if (values.help || positionals.length === 0) {
    console.log(HELP);
    return 0;
  }
  // `usage` is a one-word command; the others are a noun and a verb.
  const words = positionals[0] === "usage" ? 1 : 2;
  const command = COMMANDS[positionals.slice(0, words).join(" ")];
  if (!command) throw new UsageError(`unknown command '${positionals.slice(0, 2).join(" ")}'`);
  const token = process.env.ADMIN_TOKEN;
  if (!token) throw new UsageError("ADMIN_TOKEN is not set");
  const admin = new AdminClient(process.env.GATEWAY_URL ?? "http://localhost:8787", token);
  const { json, rows, note } = await command(admin, values, positionals.slice(words));
  if (values.json) {
    console.log(JSON.stringify(json, null, 2));
  } else {
    if (rows.length) console.table(rows);
    else console.log("(none)");
    if (note) console.log(note);
  }
  return 0;
}

// exitCode rather than exit(): output to a pipe may still be on its way out.
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    if (
      error instanceof UsageError ||
      error?.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" ||
      error?.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE"
    ) {
      console.error(`error: ${error.message}\nRun 'npm run admin -- --help' for usage.`);
      process.exitCode = 2;
      return;
    }
    if (error instanceof AdminError) {
      const detail = [error.code, error.param && `param ${error.param}`].filter(Boolean).join(", ");
      console.error(`error: ${error.message}${detail ? ` (${detail})` : ""}`);
      process.exitCode = 1;
      return;
    }
    throw error;
  },
);
