// node test/mock/cli.mjs: the mock upstream on its own.

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { waitFor } from "./client";

it.each(["SIGINT", "SIGTERM"] as const)(
  "--port 0 prints its URL, serves, and exits 0 on %s",
  async (signal) => {
    const file = fileURLToPath(new URL("./cli.mjs", import.meta.url));
    const child = spawn(process.execPath, [file, "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    child.stdout.on("data", (d) => (stdout += d));
    expect(await waitFor(() => /listening on http:\/\/127\.0\.0\.1:\d+/.test(stdout), 5000), stdout).toBe(
      true,
    );
    const url = stdout.match(/http:\/\/127\.0\.0\.1:\d+/)![0];
    expect(stdout.trim()).toBe(`mock upstream listening on ${url}`);
    const j = await (await fetch(`${url}/v1/models`)).json();
    expect(j.data[0].id).toBe("mock-model");
    const exit = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    child.kill(signal);
    expect(await exit).toEqual({ code: 0, signal: null });
  },
);
