// A start that takes longer than the acknowledgement + query deadlines, on the real libvirtd + QEMU:
// a 2 GiB guest whose memory QEMU preallocates, under a control plane whose deadlines (1 s + 1 s)
// are shorter than a real guest start takes on any machine we know. The agent reports progress
// while libvirt works, so the request stays `sent` and the start ends RUNNING, not failed. Nothing
// here assumes how fast the guest starts: the wait is the request's own, and the time it took is
// printed, not asserted.
import { rmSync } from "node:fs";
import { Hypervisor } from "@unraid/libvirt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess } from "../support/agent.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import { disklessQemuDomain } from "../support/qemu-domain.ts";
import { FAST_AGENT_ARGS, createNode, eventually, getRequest, getVm, json, startControlPlane, waitConnected } from "../e2e/journey.ts";

const URI = "qemu:///system";
const DEADLINES = { ACK_TIMEOUT_MS: "1000", QUERY_TIMEOUT_MS: "1000" };
const { name, uuid, xml } = disklessQemuDomain("qx-slow", { memoryMiB: 2048, preallocate: true });

let cp: ControlPlane;
let admin: Hypervisor;
let agent: AgentProcess | undefined;

beforeAll(async () => {
  admin = new Hypervisor({ uri: URI });
  await admin.connectOpen();
  await admin.domainDefineXML(xml);
  cp = await startControlPlane(DEADLINES);
});

afterAll(async () => {
  await agent?.dispose();
  const dom = await admin.domainLookupByUUIDString(uuid).catch(() => null);
  if (dom) {
    await admin.domainDestroy(dom).catch(() => {});
    await admin.domainUndefine(dom).catch(() => {});
  }
  await admin.connectClose();
  rmSync(`/var/log/libvirt/qemu/${name}.log`, { force: true });
  await cp?.dispose();
});

describe("a start slower than its deadlines", () => {
  it("ends RUNNING with its request done, carried by the agent's progress reports", async () => {
    const { node, joinToken } = await createNode(cp, `slow-${Date.now()}`);
    agent = AgentProcess.start({ server: cp.url, token: joinToken, libvirtUri: URI, logDir: "/var/log/libvirt/qemu", args: [...FAST_AGENT_ARGS, "--progress-interval", "1000"] });
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
    expect((await admin.domainGetInfo(await admin.domainLookupByUUIDString(uuid))).state).toBe(1); // running
    expect((await getVm(cp, uuid)).state).toBe("RUNNING");
    const deadlines = Number(DEADLINES.ACK_TIMEOUT_MS) + Number(DEADLINES.QUERY_TIMEOUT_MS);
    console.log(`slow start: ${tookMs} ms from request to RUNNING (ack + query deadlines ${deadlines} ms): outcome RUNNING, request done`);
  });
});
