// What a graphical console's socket says first, read as a viewer's page would: after its hello with
// the ticket, the JSON `ready` and the display's first bytes (the RFB version the VNC server sends).
import WebSocket from "ws";

export type RfbGreeting = { ready: unknown; version: string };

/** Opens the console socket at `url` (ws://...) with `ticket`, waits for the RFB version, closes it. */
export async function rfbGreeting(url: string, ticket: string, timeoutMs = 30_000): Promise<RfbGreeting> {
  const ws = new WebSocket(url);
  const control: unknown[] = [];
  try {
    return await new Promise<RfbGreeting>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no RFB version in ${timeoutMs} ms; control messages: ${JSON.stringify(control)}`)),
        timeoutMs,
      );
      ws.on("message", (data, binary) => {
        if (!binary) return void control.push(JSON.parse(String(data)));
        clearTimeout(timer);
        resolve({ ready: control[0], version: Buffer.from(data as Buffer).toString("latin1") });
      });
      ws.once("open", () => ws.send(JSON.stringify({ type: "hello", ticket })));
      ws.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      ws.once("close", (code) => {
        clearTimeout(timer);
        reject(
          new Error(`the socket closed (${code}) before the RFB version; control messages: ${JSON.stringify(control)}`),
        );
      });
    });
  } finally {
    ws.close();
  }
}
