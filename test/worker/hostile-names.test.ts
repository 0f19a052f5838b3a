// Text a host reports (VM names, and the messages quoting them) is data wherever it leaves: a
// Slack-format delivery escapes Slack's markup characters in every piece of it, for every event
// kind, while the JSON format carries the names exactly. The target is a loopback port nothing
// listens on: what is checked is the delivery as queued (its body is fixed then).
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { notifyNodeLiveness, notifyRepairedVm, notifyStuckVm } from "../../worker/notifications/notify.ts";
import { NOTIFICATION_EVENTS, renderBody, slackEscape, TEST_EVENT } from "../../worker/notifications/payload.ts";
import {
  agentsClosedAfterEach,
  api,
  createNode,
  enroll,
  eventually,
  json,
  TestAgent,
  unique,
  vmInfo,
} from "./support.ts";

const agents = agentsClosedAfterEach();

const PHISH = "<!channel> mail <mailto:attacker@evil.example|security@quantix.example>";
const LITERAL = "db &lt;primary&gt; & co";

type Delivery = { id: string; event: string; payload: any };

async function addTarget(format: "json" | "slack"): Promise<string> {
  const events = [...NOTIFICATION_EVENTS];
  const body = { name: unique(format), url: "http://127.0.0.1:9/hook", secret: "s", events, format };
  return (await json(await api("/api/notifications/targets", { json: body }), 201)).target.id;
}

async function deliveries(targetId: string): Promise<Delivery[]> {
  return (await json(await api(`/api/notifications/deliveries?target_id=${targetId}&limit=200`))).deliveries;
}

/** What a Slack client would make of the text: its three entities back to characters. */
const slackShows = (text: string) => text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");

function expectInert(text: string) {
  expect(text).not.toContain("<!channel>");
  expect(text).not.toContain("<mailto:");
  // No markup at all: every `<`, `>` and `&` is one of the three escapes.
  expect(text).not.toMatch(/[<>]/);
  expect(text.replace(/&(amp|lt|gt);/g, "")).not.toContain("&");
}

describe("Slack-format deliveries", () => {
  it("escape &, < and > in names and messages of every event kind; JSON carries them exactly", () => {
    for (const event of [...NOTIFICATION_EVENTS, TEST_EVENT]) {
      const p = {
        id: "d1",
        event,
        at: "2026-12-06T00:00:00.000Z",
        node: { id: "n1", name: `edge ${LITERAL}` },
        vm: { id: "v1", name: PHISH },
        message: `${PHISH} has been STOPPING for 130 s; libvirt shutoff -> STOPPED; ${LITERAL}`,
      };
      const { text } = JSON.parse(renderBody("slack", p)) as { text: string };
      expectInert(text);
      expect(text).toContain("&lt;!channel&gt; mail &lt;mailto:attacker@evil.example|security@quantix.example&gt;");
      // A name that already holds `&lt;` is not taken for an escape: Slack shows it as written.
      expect(text).toContain("db &amp;lt;primary&amp;gt; &amp; co");
      expect(slackShows(text)).toBe(`[${event}] node edge ${LITERAL}, VM ${PHISH}: ${p.message}`);
      expect(JSON.parse(renderBody("json", p))).toEqual(p);
    }
    expect(slackEscape("a&b<c>d&lt;")).toBe("a&amp;b&lt;c&gt;d&amp;lt;");
  });

  it("a hostile VM name in vm.flagged, vm.stuck, vm.repaired and a node's liveness, from a real report", async () => {
    const slack = await addTarget("slack");
    const plain = await addTarget("json");
    // Node names are letters, digits, '.', '_' and '-' only (checked where an admin gives them).
    const nodeName = unique("edge");
    const { node, joinToken } = await createNode(nodeName);
    const { credential } = await enroll(joinToken);
    const agent = await TestAgent.connect(credential);
    agents.push(agent);
    agent.hello();
    const phish = vmInfo(PHISH, "running");
    const literal = vmInfo(LITERAL, "running");
    agent.inventory([phish, literal]);
    await eventually(async () => expect((await api(`/api/vms/${literal.uuid}`)).status).toBe(200));

    // vm.flagged: force-reset to STOPPED, and the hypervisor says it runs.
    await json(await api(`/api/vms/${phish.uuid}/reset_state?force=true`, { method: "POST" }));
    const q = await agent.next("vm.state");
    agent.reply(q, "result", { state: "RUNNING", libvirtState: "running" });
    await eventually(async () =>
      expect((await deliveries(slack)).some((d) => d.event === "vm.flagged" && d.payload.text.includes("mailto"))).toBe(
        true,
      ),
    );
    // vm.stuck and vm.repaired, raised the way the reconciler and the stuck scan raise them.
    const stuckVm = { id: literal.uuid, name: LITERAL, state: "STOPPING", stateUpdatedAt: Date.now() - 200_000 };
    await notifyStuckVm(env, node.id, { ...stuckVm, transitionRequestId: "r1" });
    await notifyRepairedVm(
      env,
      { vmId: literal.uuid, expectedState: "STOPPING" },
      { state: "STOPPED", libvirtState: "shutoff" },
    );
    await notifyNodeLiveness(env, node.id, false, `the node stopped answering: ${PHISH}`);

    const sent = await deliveries(slack);
    const kinds = new Set(sent.map((d) => d.event));
    for (const k of ["vm.flagged", "vm.stuck", "vm.repaired", "node.offline"]) expect(kinds).toContain(k);
    for (const d of sent) expectInert(d.payload.text);
    const flagged = sent.find((d) => d.event === "vm.flagged")!.payload.text as string;
    expect(flagged).toContain(`VM ${slackEscape(PHISH)}:`);
    const stuck = sent.find((d) => d.event === "vm.stuck")!.payload.text as string;
    expect(stuck).toContain("db &amp;lt;primary&amp;gt; &amp; co has been STOPPING");

    const exact = await deliveries(plain);
    const jsonFlagged = exact.find((d) => d.event === "vm.flagged" && d.payload.vm.id === phish.uuid)!;
    expect(jsonFlagged.payload.vm.name).toBe(PHISH);
    expect(jsonFlagged.payload.node.name).toBe(nodeName);
    expect(exact.find((d) => d.event === "vm.stuck")!.payload.vm.name).toBe(LITERAL);
  });
});
