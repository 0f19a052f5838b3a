// Power actions through the control plane on the real libvirtd + QEMU. A start that takes longer
// than the acknowledgement + query deadlines: a 2 GiB guest whose memory QEMU preallocates, under a
// control plane whose deadlines (1 s + 1 s) are shorter than a real guest start takes on any machine
// we know; the agent reports progress while libvirt works, so the request stays `sent` and the start
// ends RUNNING, not failed. Then a graceful stop of that guest (it ignores ACPI) waits, and a force
// stop sent into the wait overrides it: the graceful request ends failed "overridden by force stop",
// the guest is off. Nothing here assumes how fast the guest starts or stops: the waits are the
// requests' own, and the times taken are printed, not asserted.
import { rmSync } from "node:fs";
import { LibvirtClient } from "../../agent/libvirt/index.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess } from "../support/agent.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import { disklessQemuDomain } from "../support/qemu-domain.ts";
import {
  FAST_AGENT_ARGS,
  createNode,
  eventually,
  getRequest,
  getVm,
  json,
  startControlPlane,
  waitConnected,
} from "../e2e/journey.ts";

const URI = "qemu:///system";
const DEADLINES = { ACK_TIMEOUT_MS: "1000", QUERY_TIMEOUT_MS: "1000", STOP_GRACE_MS: "60000" };
const { name, uuid, xml } = disklessQemuDomain("qx-slow", { memoryMiB: 2048, preallocate: true });

let cp: ControlPlane;
let admin: LibvirtClient;
let agent: AgentProcess | undefined;

beforeAll(async () => {
  admin = await LibvirtClient.connect(URI);
  await admin.defineXml(xml);
  cp = await startControlPlane(DEADLINES);
});

afterAll(async () => {
  await agent?.dispose();
  const dom = await admin.lookupByUuid(uuid).catch(() => null);
  if (dom) {
    await admin.destroy(dom).catch(() => {});
    await admin.undefine(dom).catch(() => {});
  }
  await admin.close();
  rmSync(`/var/log/libvirt/qemu/${name}.log`, { force: true });
  await cp?.dispose();
});

describe("a start slower than its deadlines", () => {
  it("ends RUNNING with its request done, carried by the agent's progress reports", async () => {
    const { node, joinToken } = await createNode(cp, `slow-${Date.now()}`);
    agent = AgentProcess.start({
      server: cp.url,
      token: joinToken,
      libvirtUri: URI,
      logDir: "/var/log/libvirt/qemu",
      args: [...FAST_AGENT_ARGS, "--progress-interval", "1000"],
    });
    await waitConnected(cp, node.id);
    await eventually("the guest listed", async () => (await cp.api(`/api/vms/${uuid}`)).ok, 20_000);

    const t0 = Date.now();
    const res = await cp.api(`/api/vms/${uuid}/start?wait=true`, { method: "POST" });
    const tookMs = Date.now() - t0;
    const body = await json(res);
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.vm.state).toBe("RUNNING");
    expect(body.request.status).toBe("done");
    expect(await getRequest(cp, body.request.id)).toMatchObject({ status: "done" });
    expect((await admin.domainInfo(await admin.lookupByUuid(uuid))).state).toBe(1); // running
    expect((await getVm(cp, uuid)).state).toBe("RUNNING");
    const deadlines = Number(DEADLINES.ACK_TIMEOUT_MS) + Number(DEADLINES.QUERY_TIMEOUT_MS);
    console.log(
      `slow start: ${tookMs} ms from request to RUNNING (ack + query deadlines ${deadlines} ms): outcome RUNNING, request done`,
    );
  });

  it("a force stop sent while a graceful stop waits for the guest overrides it: the guest is off, the graceful request failed 'overridden by force stop'", async () => {
    expect((await getVm(cp, uuid)).state).toBe("RUNNING");
    const graceful = await json(await cp.api(`/api/vms/${uuid}/stop`, { method: "POST" }));
    expect(graceful.vm.state).toBe("STOPPING");
    await eventually(
      "graceful stop acknowledged",
      async () => (await getRequest(cp, graceful.request.id)).status === "sent",
      10_000,
      50,
    );
    await new Promise((r) => setTimeout(r, 1_000)); // the agent now waits for a guest that ignores ACPI
    const t0 = Date.now();
    const res = await cp.api(`/api/vms/${uuid}/stop?force=true&wait=true`, { method: "POST" });
    const tookMs = Date.now() - t0;
    const body = await json(res);
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.vm.state).toBe("STOPPED");
    expect((await admin.domainInfo(await admin.lookupByUuid(uuid))).state).toBe(5); // shutoff
    expect(await getRequest(cp, graceful.request.id)).toMatchObject({
      status: "failed",
      error: { code: "overridden", message: "overridden by force stop" },
    });
    console.log(`force stop override: ${tookMs} ms from the force stop to the guest off and the VM STOPPED`);
  });
});
