import { Worker } from "node:worker_threads";

/**
 * Starts the mock upstream (test/mock/server.mjs) on a worker thread.
 * @returns {Promise<{port: number, baseUrl: string, close: () => Promise<void>}>}
 */
export async function startUpstream() {
  const thread = new Worker(new URL("./upstream.thread.mjs", import.meta.url));
  const { port, baseUrl } = await new Promise((resolve, reject) => {
    thread.once("message", resolve);
    thread.once("error", reject);
  });
  const close = async () => {
    const exited = new Promise((resolve) => thread.once("exit", resolve));
    thread.postMessage("close");
    await exited;
  };
  return { port, baseUrl, close };
}
