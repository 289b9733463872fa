import type { TestProject } from "vitest/node";
import { startMockUpstream } from "./mock/server.mjs";

declare module "vitest" {
  export interface ProvidedContext {
    upstreamBaseUrl: string;
    /** The mutant under test, provided by scripts/mutate-runner.mjs for `npm run mutate` only. */
    strykerActiveMutant: string;
  }
}

/** Starts the mock upstream once for the whole run and hands its address to the Worker. */
export default async function setup(project: TestProject) {
  const upstream = await startMockUpstream();
  project.provide("upstreamBaseUrl", upstream.baseUrl);
  return async () => {
    await upstream.close();
  };
}
