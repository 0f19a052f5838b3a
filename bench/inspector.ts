// A CDP session on a wrangler dev inspector port, for the benches that read an isolate's heap
// (the soak, the console flood).
import { WebSocket } from "ws";

/** A CDP session on a wrangler dev inspector port (its proxy lists one target: the Worker's isolate,
 *  which under wrangler dev also runs the Worker's Durable Objects). */
export class Inspector {
  private ws: WebSocket | null = null;
  private next = 0;
  private readonly pending = new Map<number, { ok: (r: unknown) => void; fail: (e: Error) => void }>();
  private readonly port: number;
  private chunks: string[] = [];

  constructor(port: number) {
    this.port = port;
  }

  private async open(): Promise<WebSocket> {
    if (this.ws?.readyState === WebSocket.OPEN) return this.ws;
    const targets = (await (await fetch(`http://127.0.0.1:${this.port}/json/list`)).json()) as {
      webSocketDebuggerUrl: string;
    }[];
    if (!targets[0]) throw new Error(`no inspector target on port ${this.port}`);
    const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
    await new Promise((ok, fail) => (ws.once("open", ok), ws.once("error", fail)));
    ws.on("message", (data) => {
      const msg = JSON.parse(String(data)) as {
        id?: number;
        method?: string;
        params?: { chunk?: string };
        result?: unknown;
        error?: { message: string };
      };
      if (msg.method === "HeapProfiler.addHeapSnapshotChunk") this.chunks.push(msg.params?.chunk ?? "");
      const call = msg.id === undefined ? undefined : this.pending.get(msg.id);
      if (!call) return; // other events
      this.pending.delete(msg.id!);
      if (msg.error) call.fail(new Error(msg.error.message));
      else call.ok(msg.result);
    });
    ws.on("close", () => {
      for (const call of this.pending.values()) call.fail(new Error("inspector closed"));
      this.pending.clear();
    });
    this.ws = ws;
    return ws;
  }

  private async call<T>(method: string): Promise<T> {
    const ws = await this.open();
    const id = ++this.next;
    return new Promise<T>((ok, fail) => {
      const timer = setTimeout(
        () => (this.pending.delete(id), fail(new Error(`${method}: no answer in 30 s`))),
        30_000,
      );
      this.pending.set(id, {
        ok: (r) => (clearTimeout(timer), ok(r as T)),
        fail: (e) => (clearTimeout(timer), fail(e)),
      });
      ws.send(JSON.stringify({ id, method, params: {} }));
    });
  }

  /** Bytes of the isolate's V8 heap in use after a full collection. */
  async heapAfterGc(): Promise<number> {
    await this.call("HeapProfiler.collectGarbage");
    return (await this.call<{ usedSize: number }>("Runtime.getHeapUsage")).usedSize;
  }

  /** Self size and count of the isolate's heap objects by constructor (or node type), after a GC. */
  async heapByConstructor(): Promise<Map<string, { count: number; bytes: number }>> {
    this.chunks = [];
    await this.call("HeapProfiler.takeHeapSnapshot");
    const snap = JSON.parse(this.chunks.join("")) as {
      snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
      nodes: number[];
      strings: string[];
    };
    this.chunks = [];
    const fields = snap.snapshot.meta.node_fields;
    const [typeAt, nameAt, sizeAt] = ["type", "name", "self_size"].map((f) => fields.indexOf(f));
    const types = snap.snapshot.meta.node_types[0];
    const out = new Map<string, { count: number; bytes: number }>();
    for (let i = 0; i < snap.nodes.length; i += fields.length) {
      const type = types[snap.nodes[i + typeAt]];
      const key = type === "object" || type === "closure" ? `${type} ${snap.strings[snap.nodes[i + nameAt]]}` : type;
      const entry = out.get(key) ?? { count: 0, bytes: 0 };
      entry.count++;
      entry.bytes += snap.nodes[i + sizeAt];
      out.set(key, entry);
    }
    return out;
  }

  close(): void {
    this.ws?.close();
  }
}
