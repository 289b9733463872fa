// Runs the project's mock upstream on its own thread, so that serving the upstream side never
// queues behind the load generator's own event loop (both would otherwise share one thread).
import { parentPort } from "node:worker_threads";
import { startMockUpstream } from "../test/mock-upstream.mjs";

const mock = await startMockUpstream();
parentPort.postMessage({ port: mock.port, baseUrl: mock.baseUrl });
parentPort.once("message", async () => {
  await mock.close();
  parentPort.close();
});
