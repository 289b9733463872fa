#!/usr/bin/env node
// The console's built files (public/console/lib/, not committed): Chart.js's browser build, from
// node_modules so that the lockfile decides its version, and the admin API client the CLI uses, so
// that the console calls the API exactly as the CLI does. wrangler runs this before `wrangler dev`
// and `wrangler deploy` (wrangler.toml `[build]`); `npm test` and `npm run typecheck` run it first.
import { copyFile, mkdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const lib = join(root, "public", "console", "lib");
const chartJs = join(dirname(createRequire(import.meta.url).resolve("chart.js")), "chart.umd.min.js");

await mkdir(lib, { recursive: true });
await copyFile(chartJs, join(lib, "chart.umd.min.js"));
await copyFile(join(root, "scripts", "admin-client.mjs"), join(lib, "admin-client.mjs"));
