// The floor probe's echoing client, a process of its own as an agent is: connects to the probe's
// Durable Object over a WebSocket, sends every binary frame straight back (a relayed keystroke), and
// answers each `{id, bytes, json}` with `bytes` bytes of text, in one plain frame `<id> <text>`, or
// as the agent answers a log read: one JSON result frame holding the text (`json`), or a JSON
// log.chunk frame, then a JSON result frame (`chunked`, older agents). Connects again when the link
// drops (wrangler dev restarts the object when a file changes). Prints "ready" once connected; exits
// on SIGTERM or when its parent goes.
//   node bench/floor/echo-client.ts ws://127.0.0.1:PORT/connect
import { WebSocket } from "ws";

const url = process.argv[2];
if (!url?.startsWith("ws://127.0.0.1:")) {
  console.error("usage: echo-client.ts ws://127.0.0.1:PORT/connect");
  process.exit(2);
}

/** Log-like ASCII text of exactly `bytes` bytes (one string per size, built once). */
const texts = new Map<number, string>();
function textOf(bytes: number): string {
  let text = texts.get(bytes);
  if (text === undefined) {
    const line = "2026-11-30T08:00:00.000000Z qemu-system-x86_64: bench line of a guest's QEMU log\n";
    text = line.repeat(Math.ceil(bytes / line.length)).slice(0, bytes);
    texts.set(bytes, text);
  }
  return text;
}

let announced = false;
function connect(): void {
  const ws = new WebSocket(url);
  ws.on("open", () => {
    if (!announced) process.stdout.write("ready\n");
    announced = true;
  });
  ws.on("message", (data, binary) => {
    if (binary) return ws.send(data as Buffer); // a relayed frame: straight back
    const ask = JSON.parse(String(data)) as { id: string; bytes: number; json: false | "json" | "chunked" };
    const text = textOf(ask.bytes);
    if (!ask.json) return ws.send(`${ask.id} ${text}`);
    if (ask.json === "json")
      return ws.send(JSON.stringify({ type: "result", id: ask.id, payload: { chunks: 0, text } }));
    ws.send(JSON.stringify({ type: "log.chunk", id: ask.id, payload: { seq: 0, text } }));
    ws.send(JSON.stringify({ type: "result", id: ask.id, payload: { chunks: 1 } }));
  });
  ws.on("error", (err) => console.error(`echo client: ${err.message}`));
  ws.on("close", () => setTimeout(connect, 200));
}

process.on("SIGTERM", () => process.exit(0));
process.on("disconnect", () => process.exit(0));
connect();
