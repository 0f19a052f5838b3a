// `--transport auto` against a loopback control plane that drops WebSockets on demand: it counts
// WebSocket failures in a row (links that drop before being stable count), a stable link starts the
// count over, and the fifth failure in a row moves the link to long-poll (POST /agent/poll) if plain
// HTTPS (GET /api/health) reaches the control plane; if it does not, the control plane is just away.
import { afterEach, describe, expect, it } from "vitest";
import type { LinkState } from "../../agent/link/connection.ts";
import { AutoLink, SWITCH_AFTER_FAILURES, createLink } from "../../agent/link/transport.ts";
import { LoopbackControlPlane, silentLog, until, type Behaviour } from "./helpers.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(
  behaviour: (attempt: number) => Behaviour,
  backoff: { backoffBaseMs: number; backoffCapMs: number; random?: () => number } = {
    backoffBaseMs: 5,
    backoffCapMs: 20,
  },
) {
  const cp = await LoopbackControlPlane.start();
  cp.behaviour = behaviour;
  const polls: string[] = [];
  // The loopback control plane has no long-poll routes: seeing the request is enough here.
  cp.server.on("request", (req) => {
    if (req.url === "/agent/poll") polls.push(req.method ?? "");
  });
  const states: LinkState[] = [];
  const link = createLink({
    server: cp.url,
    transport: "auto",
    credential: () => "cred-1",
    timings: {
      connectTimeoutMs: 2_000,
      backoffBaseMs: backoff.backoffBaseMs,
      backoffCapMs: backoff.backoffCapMs,
      stableAfterMs: 150,
    },
    random: backoff.random,
    websocketRetryMs: 600_000,
    log: silentLog,
    events: { onOpen: () => {}, onMessage: () => {}, onRefused: () => {}, onStateChange: (s) => states.push(s) },
  });
  cleanups.push(async () => {
    await link.stop();
    await cp.close();
  });
  link.start();
  return { cp, link: link as AutoLink, polls, states };
}

describe("--transport auto", () => {
  it(`switches to long-poll on the ${SWITCH_AFTER_FAILURES}th WebSocket failure in a row (early drops count) while HTTPS reaches the control plane`, async () => {
    // Retries 200 ms apart once backed off (the most of each delay): the GET /api/health that the
    // fifth failure starts has that long per extra attempt, however slow this machine's first fetch.
    const { cp, link, polls } = await setup((n) => (n % 2 ? "drop" : "refuse503"), {
      backoffBaseMs: 50,
      backoffCapMs: 200,
      random: () => 0.999999,
    });
    await until(() => polls.length > 0, 10_000);
    // The fifth failure asks GET /api/health; the socket's backoff may make one more attempt meanwhile.
    expect(cp.attempts.length).toBeGreaterThanOrEqual(SWITCH_AFTER_FAILURES);
    expect(cp.attempts.length).toBeLessThanOrEqual(SWITCH_AFTER_FAILURES + 2);
    expect(link.transport).toBe("long-poll");
    // The WebSocket link was stopped: no further upgrade attempts while on long-poll.
    const attempts = cp.attempts.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(cp.attempts).toHaveLength(attempts);
  });

  it("a control plane that answers neither WebSockets nor HTTPS (down, restarting) is waited for on the WebSocket, not left for long-poll", async () => {
    let up = false;
    const { cp, link, polls } = await setup(() => (up ? "accept" : "refuse503"));
    cp.healthy = false;
    await until(() => cp.attempts.length >= 3 * SWITCH_AFTER_FAILURES, 10_000);
    expect(link.transport).toBe("websocket");
    expect(polls).toEqual([]);
    // Back: the WebSocket connects, still no long-poll.
    cp.healthy = true;
    up = true;
    await until(() => link.online, 10_000);
    expect(link.transport).toBe("websocket");
    expect(polls).toEqual([]);
  });

  it("a link that stayed up long enough starts the count over", async () => {
    // 4 failures, a stable link, 4 failures (the stable link's drop is the first of them), then up.
    const plan: Behaviour[] = ["drop", "drop", "drop", "drop", "accept", "drop", "drop", "drop", "accept"];
    const { cp, link, polls } = await setup((n) => plan[n] ?? "accept");
    await until(() => cp.attempts.length === 5 && cp.socket !== undefined, 10_000);
    await new Promise((r) => setTimeout(r, 250)); // longer than stableAfterMs
    cp.socket!.close(1012, "restarting");
    await until(() => cp.attempts.length === plan.length && link.online, 10_000);
    expect(polls).toEqual([]);
    expect(link.transport).toBe("websocket");
  });
});
