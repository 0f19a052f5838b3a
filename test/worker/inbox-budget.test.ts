// The node's work budget as its inbox judges it (worker/session/inbox.ts, at the shipped budgets):
// answers to the control plane's own requests cost it nothing, so an operator's burst of reset_state
// calls never closes the node's link; frames that make D1 work on the agent's word still do, and a
// link refused while its node cools down is told why it was first refused.
import { describe, expect, it } from "vitest";
import { inventoryDigest } from "../../protocol/digest.ts";
import { sessionSettings } from "../../worker/config.ts";
import { AgentInbox, type Refusal } from "../../worker/session/inbox.ts";

/** The shipped admission limits, with the flood limit out of the way (this is about the work budget). */
const limits = () => ({ ...sessionSettings({}).admission, framesPerSecond: 1e9, framesBurst: 1e9 });

/** Sends `count` frames through an inbox, each once the one before is handled (the backlog stays
 *  empty: this is about the budget); the refusals it made. */
async function feed(inbox: AgentInbox, frame: (i: number) => unknown, count: number): Promise<Refusal[]> {
  const refused: Refusal[] = [];
  for (let i = 0; i < count; i++)
    await inbox.receive(
      JSON.stringify(frame(i)),
      (r) => refused.push(r),
      async () => {},
      async () => {},
    );
  return refused;
}

describe("the node's work budget, in its inbox", () => {
  it("takes more answers at once than a digest's worth of statements would allow: results and errors cost it nothing", async () => {
    const l = limits();
    const inbox = new AgentInbox(l);
    // Three statements each were charged before: the burst ran out after burst / 3 answers.
    const answers = Math.ceil(l.statementsBurst / 3) + 500;
    const results = await feed(
      inbox,
      (i) => ({ type: "result", id: `q${i}`, payload: { libvirtState: "running" } }),
      answers,
    );
    const errors = await feed(
      inbox,
      (i) => ({ type: "error", id: `e${i}`, payload: { code: "libvirt_error", message: "no" } }),
      answers,
    );
    expect([...results, ...errors]).toEqual([]);
  });

  it("still charges what makes D1 work on the agent's word: digests past the burst are refused, and a later link is told the first reason", async () => {
    const l = limits();
    const inbox = new AgentInbox(l);
    const digest = { type: "inventory.digest", id: "d", payload: inventoryDigest([]) };
    const refused = await feed(inbox, () => digest, Math.ceil(l.statementsBurst / 3) + 10);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused[0].why).toMatch(/more than 100 database statements a second/);
    // A new link while the node cools down: refused, with the reason it was first refused.
    inbox.refill(Date.now());
    const later = await feed(inbox, (i) => ({ type: "result", id: `late${i}`, payload: {} }), 1);
    expect(later).toHaveLength(1);
    expect(later[0].why).toMatch(/database statements a second .*; refused for 10 s since/);
  });
});
