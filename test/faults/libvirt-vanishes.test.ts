// libvirt failing mid-command, on the real libvirtd + QEMU (the test driver keeps each connection's
// domains to itself, so nothing could undefine one under the agent there): a graceful stop is
// waiting for a guest that ignores ACPI when the domain is destroyed and undefined from another
// connection. The request must end failed with the hypervisor's reason, the VM must not be left
// STOPPING, the host's loss must show as `missing`, and a reset must say the domain is gone (404
// vm_not_found) without forcing anything. The start before it takes as long as QEMU takes here: the
// agent's progress reports keep it going past the test's short deadlines.
import { rmSync } from "node:fs";
import { LibvirtClient } from "../../agent/libvirt/index.ts";
import { disklessQemuDomain } from "../support/qemu-domain.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControlPlane } from "../support/control-plane.ts";
import { AgentProcess } from "../support/agent.ts";
import {
  FAST_AGENT_ARGS,
  createNode,
  eventually,
  getVm,
  json,
  startControlPlane,
  waitConnected,
  waitRequestSettled,
} from "../e2e/journey.ts";

const URI = "qemu:///system";
const { name, uuid, xml } = disklessQemuDomain("qx-fault");

let cp: ControlPlane;
let admin: LibvirtClient; // the "other connection" that pulls the domain away
let agent: AgentProcess | undefined;

beforeAll(async () => {
  admin = await LibvirtClient.connect(URI); // needs libvirtd running (see test/agent/qemu.test.ts)
  await admin.defineXml(xml);
  cp = await startControlPlane({ STOP_GRACE_MS: "8000" });
});

afterAll(async () => {
  await agent?.dispose();
  try {
    const dom = await admin.lookupByUuid(uuid);
    await admin.destroy(dom).catch(() => {});
    await admin.undefine(dom).catch(() => {});
  } catch {
    // already gone: the test removed it
  }
  await admin.close();
  rmSync(`/var/log/libvirt/qemu/${name}.log`, { force: true });
  await cp?.dispose();
});

describe("libvirt failing mid-command", () => {
  it("domain destroyed and undefined during a graceful stop: request failed, VM not left STOPPING, marked missing", async () => {
    const { node, joinToken } = await createNode(cp, `qemu-${Date.now()}`);
    agent = AgentProcess.start({
      server: cp.url,
      token: joinToken,
      libvirtUri: URI,
      logDir: "/var/log/libvirt/qemu",
      args: FAST_AGENT_ARGS,
    });
    await waitConnected(cp, node.id);
    await eventually("the QEMU domain listed", async () => (await cp.api(`/api/vms/${uuid}`)).ok, 20_000);

    const started = await cp.api(`/api/vms/${uuid}/start?wait=true`, { method: "POST" });
    expect(started.status).toBe(200);
    expect((await json(started)).vm.state).toBe("RUNNING");

    const stop = await cp.api(`/api/vms/${uuid}/stop`, { method: "POST" });
    expect(stop.status).toBe(202);
    const requestId = (await json(stop)).request.id as string;
    await eventually(
      "stop acknowledged",
      async () => (await json(await cp.api(`/api/requests/${requestId}`))).request.status === "sent",
      5_000,
      50,
    );
    await new Promise((r) => setTimeout(r, 1_000)); // the agent is now polling a guest that ignores ACPI
    const dom = await admin.lookupByUuid(uuid);
    await admin.destroy(dom);
    await admin.undefine(dom);

    const settled = await waitRequestSettled(cp, requestId, 15_000);
    // Either the agent's poll found the domain gone (vm_not_found / libvirt_error), or, had it read
    // "shutoff" before the undefine, the stop is done; never an unfinished request.
    expect(["failed", "done"]).toContain(settled.status);
    if (settled.status === "failed") expect(settled.error?.message ?? "").toMatch(/domain|libvirt|not found/i);
    const vm = await eventually(
      "VM marked missing",
      async () => {
        const v = await getVm(cp, uuid);
        return v.missing ? v : undefined;
      },
      15_000,
    );
    expect(vm.state).not.toBe("STOPPING");

    // Asked again, the hypervisor says it has no such domain: that is the answer (404), nothing forced.
    const reset = await cp.api(`/api/vms/${uuid}/reset_state`, { method: "POST" });
    const body = await json(reset);
    expect(reset.status, JSON.stringify(body)).toBe(404);
    expect(body.error.code).toBe("vm_not_found");
    expect(await getVm(cp, uuid)).toMatchObject({ missing: true, state: vm.state });
    expect(agent.running).toBe(true); // the agent survived its libvirt failing under it
  });
});
