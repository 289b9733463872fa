// The mock upstream on its own, until SIGINT or SIGTERM:
//   node test/mock/cli.mjs [--port N] [--host H] [--log]
// It prints `mock upstream listening on <url>`; --log writes each request to stderr.

import { startMockUpstream } from "./server.mjs";

/**
 * @param {string[]} argv
 * @returns {{ port: number, host: string | undefined, log: boolean }}
 */
function parseArgs(argv) {
  /** @type {{ port: number, host: string | undefined, log: boolean }} */
  const opts = { port: 0, host: "127.0.0.1", log: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = /** @type {string} */ (argv[i]);
    if (arg === "--port") opts.port = Number(argv[++i]);
    else if (arg.startsWith("--port=")) opts.port = Number(arg.slice(7));
    else if (arg === "--host") opts.host = argv[++i];
    else if (arg.startsWith("--host=")) opts.host = arg.slice(7);
    else if (arg === "--log") opts.log = true;
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new Error(`invalid --port: ${opts.port}`);
  }
  return opts;
}

const mock = await startMockUpstream(parseArgs(process.argv.slice(2)));
console.log(`mock upstream listening on ${mock.url}`);
const stop = async () => {
  await mock.close();
  process.exit(0);
};
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
