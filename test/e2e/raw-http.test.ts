import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWithTenant, type LocalGateway } from "./harness";

// Bodies that only a raw socket can send: lying lengths and chunked bodies past the limit.

let gateway: LocalGateway;
let key: string;
beforeAll(async () => {
  ({ gateway, key } = await startWithTenant({ MAX_BODY_BYTES: "65536" }));
}, 60_000);
afterAll(() => gateway?.close());

/** Sends `head` then `body` pieces on a raw connection; resolves with the status line's code and the text. */
function raw(
  head: string,
  pieces: Buffer[],
  { halfClose = false } = {},
): Promise<{ status: number; text: string }> {
  const { hostname, port } = new URL(gateway.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, async () => {
      socket.write(head);
      for (const piece of pieces) {
        // Once the server has answered, writing on would only earn a reset that can take the
        // answer with it.
        if (socket.destroyed || text) break;
        socket.write(piece);
        await new Promise((r) => setTimeout(r, 2));
      }
      if (halfClose) socket.end();
    });
    let text = "";
    socket.setEncoding("latin1");
    socket.on("data", (data) => {
      text += data;
      // One response is all we want; a chunked or sized body has arrived once the blank line and
      // the body's end are in.
      if (/\r\n\r\n[\s\S]*(0\r\n\r\n|\}\s*$)/.test(text)) socket.destroy();
    });
    socket.on("close", () => resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0), text }));
    socket.on("error", (error) =>
      text ? resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0), text }) : reject(error),
    );
    socket.setTimeout(10_000, () => socket.destroy());
  });
}

const head = (headers: string) =>
  `POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer ${key}\r\ncontent-type: application/json\r\n${headers}\r\n`;

async function upstreamSaw(): Promise<number> {
  const records = await (await fetch(`${gateway.upstream.url}/__mock/requests`)).json();
  return records.length;
}

describe("raw HTTP bodies", () => {
  it("answers 413 to a Content-Length over the limit without reading the body", async () => {
    const before = await upstreamSaw();
    const { status, text } = await raw(head("content-length: 50000000\r\n"), [Buffer.from('{"model":')]);
    expect(status).toBe(413);
    expect(text).toContain('"code":"request_too_large"');
    expect(await upstreamSaw()).toBe(before);
  });

  it("answers 413 to a chunked body past the limit, with no Content-Length", async () => {
    const before = await upstreamSaw();
    const chunk = Buffer.from(`4000\r\n${" ".repeat(0x4000)}\r\n`);
    const { status } = await raw(head("transfer-encoding: chunked\r\n"), Array(40).fill(chunk));
    expect(status).toBe(413);
    expect(await upstreamSaw()).toBe(before);
  });

  it("answers 400, not 500, when the body is shorter than its Content-Length", async () => {
    const before = await upstreamSaw();
    const { status } = await raw(head("content-length: 100\r\n"), [Buffer.from('{"model":"m"')], {
      halfClose: true,
    });
    expect(status).toBe(400);
    expect(await upstreamSaw()).toBe(before);
  });

  it("reads no more than Content-Length when the body is longer", async () => {
    const body = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] });
    const { status } = await raw(head(`content-length: ${body.length}\r\n`), [
      Buffer.from(body + "garbage that is not part of it"),
    ]);
    expect(status).toBe(200);
  });
});
