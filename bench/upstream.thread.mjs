// Runs the project's mock upstream on its own thread, so that serving the upstream side never
// queues behind the load generator's own event loop (both would otherwise share one thread).
import { parentPort } from "node:worker_threads";
import { startMockUpstream } from "../test/mock/server.mjs";

const parent = parentPort;
if (!parent) throw new Error("bench/upstream.thread.mjs runs as a worker thread (see bench/upstream.mjs)");
const mock = await startMockUpstream();
parent.postMessage({ port: mock.port, baseUrl: mock.baseUrl });
parent.once("message", async () => {
  await mock.close();
  parent.close();
});
