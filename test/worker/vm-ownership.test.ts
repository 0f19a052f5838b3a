// Who a VM belongs to: a node reporting a UUID another node holds (connected or not), or a deleted
// node's VM, does not take it; the VM is flagged with an event for an admin, who re-homes it with
// POST /api/vms/:id/rehome (audited). VMs per node are capped: the excess is refused with an error
// frame to the agent and a flag on the node.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import {
  agentsClosedAfterEach,
  api,
  createToken,
  eventually,
  expectError,
  json,
  TestAgent,
  vmInfo,
} from "./support.ts";

const agents = agentsClosedAfterEach();
async function newAgent() {
  const s = await TestAgent.forNewNode();
  agents.push(s.agent);
  return s;
}
const vmRow = (id: string) => env.DB.prepare("SELECT * FROM vms WHERE id = ?").bind(id).first<Record<string, any>>();
const getVm = async (id: string) => (await json(await api(`/api/vms/${id}`))).vm;
const eventsOf = async (id: string) => (await json<{ events: any[] }>(await api(`/api/vms/${id}/events`))).events;
const rehome = (id: string, body: unknown, token?: string) => api(`/api/vms/${id}/rehome`, { json: body, token });
const settle = () => new Promise((r) => setTimeout(r, 300));

describe("a UUID another node holds is not taken", () => {
  for (const holderOnline of [true, false]) {
    it(`holder ${holderOnline ? "connected" : "offline"}: the VM stays, flagged uuid_conflict naming both nodes, one event per claimant`, async () => {
      const holder = await newAgent();
      const vm = vmInfo("contested", "running");
      holder.agent.inventory([vm]);
      await eventually(async () => expect((await vmRow(vm.uuid))?.node_id).toBe(holder.nodeId));
      if (!holderOnline) {
        holder.agent.close();
        await eventually(async () =>
          expect((await json(await api(`/api/nodes/${holder.nodeId}`))).node.connected).toBe(false),
        );
      }
      const claimant = await newAgent();
      claimant.agent.inventory([{ ...vm, name: "impostor", state: "STOPPED", libvirtState: "shutoff" }]);
      claimant.agent.send({
        type: "vm.changed",
        id: "c1",
        payload: { vms: [{ ...vm, name: "impostor2", state: "PAUSED", libvirtState: "paused" }], removed: [] },
      });
      await eventually(async () => expect((await getVm(vm.uuid)).flag?.code).toBe("uuid_conflict"));
      await settle();
      const shown = await getVm(vm.uuid);
      expect(shown).toMatchObject({ node_id: holder.nodeId, name: "contested", state: "RUNNING" });
      for (const n of [holder, claimant]) expect(shown.flag.message).toContain(`${n.name} (${n.nodeId})`);
      const conflicts = (await eventsOf(vm.uuid)).filter((e) => e.action === "uuid_conflict");
      expect(conflicts).toHaveLength(1);
      expect(conflicts[0]).toMatchObject({ actor: `agent:${claimant.nodeId}`, source: "agent" });
      expect(conflicts[0].message).toContain(holder.name);
      expect(conflicts[0].message).toContain(claimant.name);
      // The claimant's view of the node holds nothing of it.
      expect((await json(await api(`/api/vms?node_id=${claimant.nodeId}`))).vms).toEqual([]);
    });
  }

  it("the holder's reports still apply while the conflict stands", async () => {
    const holder = await newAgent();
    const claimant = await newAgent();
    const vm = vmInfo("still-mine", "running");
    holder.agent.inventory([vm]);
    await eventually(async () => expect((await vmRow(vm.uuid))?.node_id).toBe(holder.nodeId));
    claimant.agent.inventory([vm]);
    await eventually(async () => expect((await getVm(vm.uuid)).flag?.code).toBe("uuid_conflict"));
    holder.agent.send({
      type: "vm.changed",
      id: "c1",
      payload: { vms: [{ ...vm, state: "PAUSED", libvirtState: "paused" }], removed: [] },
    });
    await eventually(async () => expect((await getVm(vm.uuid)).state).toBe("PAUSED"));
    expect((await getVm(vm.uuid)).flag.code).toBe("uuid_conflict");
  });
});

describe("rehome (admin)", () => {
  it("first reporter took it, the rightful node reports later: the admin re-homes it, an event names both nodes, the new node's reports apply", async () => {
    const first = await newAgent();
    const rightful = await newAgent();
    const vm = vmInfo("claimed-first", "running");
    first.agent.inventory([vm]);
    await eventually(async () => expect((await vmRow(vm.uuid))?.node_id).toBe(first.nodeId));
    rightful.agent.inventory([{ ...vm, state: "STOPPED", libvirtState: "shutoff" }]);
    await eventually(async () => expect((await getVm(vm.uuid)).flag?.code).toBe("uuid_conflict"));

    const body = await json(await rehome(vm.uuid, { node_id: rightful.nodeId, reason: "moved by the storage team" }));
    expect(body.vm).toMatchObject({ id: vm.uuid, node_id: rightful.nodeId, flag: null });
    const [ev] = await eventsOf(vm.uuid);
    expect(ev).toMatchObject({
      action: "rehomed",
      actor: "admin",
      source: "control_plane",
      reason: "moved by the storage team",
    });
    expect(ev.message).toContain(`${first.name} (${first.nodeId})`);
    expect(ev.message).toContain(`${rightful.name} (${rightful.nodeId})`);
    // The new node is asked for a fresh inventory, and its report now applies.
    await rightful.agent.next("resync");
    rightful.agent.inventory([{ ...vm, state: "STOPPED", libvirtState: "shutoff" }]);
    await eventually(async () => expect((await getVm(vm.uuid)).state).toBe("STOPPED"));
    // The old holder's report is now the claim.
    first.agent.inventory([vm]);
    await eventually(async () => expect((await getVm(vm.uuid)).flag?.code).toBe("uuid_conflict"));
    expect((await getVm(vm.uuid)).node_id).toBe(rightful.nodeId);
  });

  it("needs the admin role; 404 for an unknown VM or node; 400 for a bad body", async () => {
    const holder = await newAgent();
    const vm = vmInfo("rehome-inputs", "running");
    holder.agent.inventory([vm]);
    await eventually(async () => expect((await vmRow(vm.uuid))?.node_id).toBe(holder.nodeId));
    await expectError(
      await rehome(vm.uuid, { node_id: holder.nodeId }, await createToken("operator")),
      403,
      "forbidden",
    );
    await expectError(await rehome(vm.uuid, { node_id: holder.nodeId }, await createToken("viewer")), 403, "forbidden");
    await expectError(await rehome(vm.uuid, { node_id: holder.nodeId }, null as unknown as string), 401);
    await expectError(
      await rehome("00000000-0000-4000-8000-00000000abcd", { node_id: holder.nodeId }),
      404,
      "not_found",
    );
    await expectError(await rehome(vm.uuid, { node_id: "no-such-node" }), 404, "node_not_found");
    for (const bad of [
      {},
      { node_id: "" },
      { node_id: 5 },
      { node_id: holder.nodeId, extra: 1 },
      { node_id: "x".repeat(200) },
    ]) {
      await expectError(await rehome(vm.uuid, bad), 400, "invalid_request");
    }
    await expectError(
      await api(`/api/vms/${vm.uuid}/rehome`, {
        method: "POST",
        body: "{",
        headers: { "content-type": "application/json" },
      }),
      400,
    );
  });
});

describe("a deleted node's VMs", () => {
  it("stay on no node, flagged node_deleted; the next node to report them does not adopt them; only an admin re-homes them", async () => {
    const gone = await newAgent();
    const vm = vmInfo("orphan", "running");
    gone.agent.inventory([vm]);
    await eventually(async () => expect((await vmRow(vm.uuid))?.node_id).toBe(gone.nodeId));
    await json(await api(`/api/nodes/${gone.nodeId}`, { method: "DELETE" }));
    const orphan = await getVm(vm.uuid);
    expect(orphan).toMatchObject({ node_id: null, flag: { code: "node_deleted" } });
    expect(orphan.flag.message).toContain(gone.name);

    const next = await newAgent();
    next.agent.inventory([vm]);
    await eventually(async () => expect((await getVm(vm.uuid)).flag.message).toContain(next.name));
    await settle();
    expect((await getVm(vm.uuid)).node_id).toBeNull();
    const claim = (await eventsOf(vm.uuid)).find((e) => e.action === "uuid_conflict");
    expect(claim).toMatchObject({ actor: `agent:${next.nodeId}` });
    expect(claim.message).toContain("not adopted");
    // Hiding it is not resolving it: clear_flag refuses.
    await expectError(await api(`/api/vms/${vm.uuid}/clear_flag`, { method: "POST" }), 409, "needs_rehome");

    await json(await rehome(vm.uuid, { node_id: next.nodeId }));
    expect(await getVm(vm.uuid)).toMatchObject({ node_id: next.nodeId, flag: null });
    expect((await eventsOf(vm.uuid))[0]).toMatchObject({ action: "rehomed", actor: "admin" });
    expect((await eventsOf(vm.uuid))[0].message).toContain("from no node");
  });
});

describe("VMs per node are capped (MAX_VMS_PER_NODE, 5,000 here)", () => {
  it("past the cap new VMs are not stored: an error frame tells the agent, the node is flagged; a full node takes no re-homed VM", async () => {
    const { agent, nodeId } = await newAgent();
    const list = Array.from({ length: 5002 }, (_, i) => vmInfo(`cap-${String(i).padStart(5, "0")}`));
    agent.inventory(list, "over-cap");
    const refusal = await agent.next("error", 30_000);
    expect(refusal.payload.code).toBe("vm_cap_exceeded");
    expect(refusal.payload.message).toContain("5000");
    expect(refusal.payload.message).toContain("2 reported VM(s) were not stored");
    const n = await env.DB.prepare("SELECT count(*) AS n FROM vms WHERE node_id = ?")
      .bind(nodeId)
      .first<{ n: number }>();
    expect(n?.n).toBe(5000);
    const node = (await json(await api(`/api/nodes/${nodeId}`))).node;
    expect(node).toMatchObject({ vmCount: 5000, flag: { code: "vm_cap_exceeded" } });
    // The refused ones are not VMs at all.
    expect((await api(`/api/vms/${list[5001].uuid}`)).status).toBe(404);

    const elsewhere = await newAgent();
    const vm = vmInfo("would-overflow", "running");
    elsewhere.agent.inventory([vm]);
    await eventually(async () => expect((await vmRow(vm.uuid))?.node_id).toBe(elsewhere.nodeId));
    await expectError(await rehome(vm.uuid, { node_id: nodeId }), 409, "vm_cap_exceeded");
  }, 90_000);
});
