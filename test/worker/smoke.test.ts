import { expect, it } from "vitest";
import { api, json, TestAgent, vmInfo, eventually } from "./support.ts";

it("smoke", async () => {
  expect(await json(await api("/api/health", { token: null }))).toMatchObject({ ok: true });
  const { agent, nodeId } = await TestAgent.forNewNode();
  const vm = vmInfo("web-1", "running");
  agent.inventory([vm]);
  const got = await eventually(async () => json(await api(`/api/vms/${vm.uuid}`)));
  expect(got.vm).toMatchObject({ name: "web-1", state: "RUNNING", node_id: nodeId });
  const stop = api(`/api/vms/${vm.uuid}/stop?wait=true`, { method: "POST" });
  const cmd = await agent.next("vm.stop");
  agent.reply(cmd, "ack");
  agent.reply(cmd, "result", { state: "STOPPED", libvirtState: "shutoff" });
  const body = await json(await stop);
  expect(body.vm.state).toBe("STOPPED");
  const logs = api(`/api/vms/${vm.uuid}/logs?lines=5`);
  const lc = await agent.next("vm.logs");
  agent.reply(lc, "log.chunk", { seq: 0, text: "a\nb\n" });
  agent.reply(lc, "result", { logPath: "/x/web-1.log", logSizeBytes: 4, linesReturned: 2, truncated: false, lastModified: null, chunks: 1 });
  expect(await json(await logs)).toMatchObject({ qemuLog: "a\nb\n", linesReturned: 2 });
  agent.close();
});
