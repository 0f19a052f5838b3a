// The one-line install, run exactly as the control plane hands it out, as root in a fresh Debian 12
// root filesystem (debootstrap, its own mount and PID namespaces) with the control plane on loopback:
// the files, the user, the 0600 environment file, an agent that connects when started as the unit
// says, a second run that keeps the node and its credential, and --uninstall leaving nothing behind.
// systemd is not running in the root, so the installer's no-systemd path is the one taken.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InstallManifest } from "../../protocol/install.ts";
import { ControlPlane } from "../support/control-plane.ts";
import { IsolatedRoot, debianRoot } from "../support/debian-root.ts";

const ROOT = join(import.meta.dirname, "../..");
let cp: ControlPlane;
let manifest: InstallManifest;

type NodeRow = { id: string; name: string; connected: boolean; agentVersion: string | null };

async function nodeNamed(name: string): Promise<NodeRow | undefined> {
  const { nodes } = (await (await cp.api("/api/nodes")).json()) as { nodes: NodeRow[] };
  return nodes.find((n) => n.name === name);
}

/** Every file below `dir`, as paths relative to it. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((p) => !statSync(join(dir, p)).isDirectory());
}

beforeAll(async () => {
  if (!existsSync(join(ROOT, "web/dist/install/manifest.json")))
    throw new Error("web/dist/install is missing: npm run build makes what the control plane serves");
  manifest = InstallManifest.parse(JSON.parse(readFileSync(join(ROOT, "web/dist/install/manifest.json"), "utf8")));
  debianRoot(); // made once (minutes), then cached
  cp = await ControlPlane.start();
}, 900_000);

afterAll(async () => {
  await cp?.dispose();
});

describe.each([
  { where: "a fresh Debian 12 root (debootstrap, Node.js 18 from Debian)", lower: debianRoot, name: "debian-host" },
  { where: "this machine's own root filesystem (under an overlay)", lower: () => "/", name: "this-host" },
])("one-line install on $where", ({ where, lower, name }) => {
  let root: IsolatedRoot;
  let installCommand: string;
  let credential: string;
  beforeAll(() => {
    root = new IsolatedRoot(lower());
  });
  afterAll(() => root?.dispose());

  it("refuses to run without root, saying so", async () => {
    const r = await root.run(`curl -fsSL ${cp.url}/install.sh | runuser -u nobody -- sh -s -- --token qxj_x`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("must run as root");
  });

  it("the exact installCommand leaves the agent file, the unit, the user in group libvirt and a 0600 environment file without the spent token", async () => {
    const created = (await (await cp.api("/api/nodes", { method: "POST", json: { name } })).json()) as {
      joinToken: string;
      installCommand: string;
    };
    installCommand = created.installCommand;
    expect(installCommand).toBe(`curl -fsSL ${cp.url}/install.sh | sh -s -- --token ${created.joinToken}`);

    const r = await root.run(installCommand);
    console.log(`installCommand on ${where}: ${(r.ms / 1000).toFixed(1)} s`);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain("Debian GNU/Linux 12");
    expect(r.stdout).toContain("SHA-256 verified");
    expect(r.stdout).toContain("systemd is not running here");

    const facts = await root.run(
      [
        "sha256sum /opt/quantix-agent/quantix-agent.mjs",
        "stat -c '%a %U %G %n' /etc/quantix-agent.env /var/lib/quantix-agent /var/lib/quantix-agent/node.json /etc/systemd/system/quantix-agent.service",
        "id -nG quantix",
        "getent passwd quantix",
        "cat /etc/quantix-agent.env",
      ].join("; "),
    );
    expect(facts.code, facts.stderr).toBe(0);
    expect(facts.stdout).toContain(`${manifest.sha256}  /opt/quantix-agent/quantix-agent.mjs`);
    expect(facts.stdout).toContain("600 root root /etc/quantix-agent.env");
    expect(facts.stdout).toContain("700 quantix quantix /var/lib/quantix-agent\n");
    expect(facts.stdout).toContain("600 quantix quantix /var/lib/quantix-agent/node.json");
    expect(facts.stdout).toContain("644 root root /etc/systemd/system/quantix-agent.service");
    expect(facts.stdout).toMatch(/^quantix libvirt$/m);
    expect(facts.stdout).toMatch(/^quantix:x:\d+:\d+::\/var\/lib\/quantix-agent:\/usr\/sbin\/nologin$/m);
    expect(facts.stdout).toContain(`QX_SERVER=${cp.url}\n`);
    expect(facts.stdout).not.toContain("QX_TOKEN");

    // The spent join token is nowhere in what the install wrote.
    for (const file of filesUnder(root.upper)) {
      const path = join(root.upper, file);
      if (statSync(path).isFile()) expect(readFileSync(path).includes(created.joinToken), file).toBe(false);
    }
    const node = JSON.parse(readFileSync(join(root.upper, "var/lib/quantix-agent/node.json"), "utf8"));
    credential = node.credential;
    expect(node.nodeId).toBe((await nodeNamed(name))!.id);
  });

  it("started as the unit says, the agent connects and reports the served version", async () => {
    const unit = readFileSync(join(root.upper, "etc/systemd/system/quantix-agent.service"), "utf8");
    expect(unit).toMatch(/^User=quantix$/m);
    expect(unit).toMatch(/^SupplementaryGroups=libvirt$/m);
    expect(unit).toMatch(/^EnvironmentFile=\/etc\/quantix-agent.env$/m);
    const execStart = /^ExecStart=(.+)$/m.exec(unit)![1];
    expect(execStart).toBe("/usr/bin/node --max-semi-space-size=1 /opt/quantix-agent/quantix-agent.mjs");
    // What the installer printed for a host without systemd: the unit's user, environment and command.
    const second = await root.run(installCommand);
    const printed = second.stdout
      .split("\n")
      .find((l) => l.includes(". /etc/quantix-agent.env"))!
      .trim();
    expect(printed).toContain(`runuser -u quantix -- ${execStart}`);
    expect(printed).toContain("QX_STATE_DIR=/var/lib/quantix-agent");

    const agent = root.spawn(printed);
    let output = "";
    agent.stdout!.on("data", (d) => (output += d));
    agent.stderr!.on("data", (d) => (output += d));
    try {
      await expect
        .poll(
          async () => {
            const node = await nodeNamed(name);
            return { connected: node?.connected, agentVersion: node?.agentVersion };
          },
          { timeout: 60_000 },
        )
        .toEqual({ connected: true, agentVersion: manifest.version });
    } catch (err) {
      throw new Error(`${(err as Error).message}\nagent output:\n${output}`);
    } finally {
      await root.stop(agent);
    }
  });

  it("a second run keeps the node and its credential", async () => {
    const r = await root.run(installCommand);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const node = JSON.parse(readFileSync(join(root.upper, "var/lib/quantix-agent/node.json"), "utf8"));
    expect(node.credential).toBe(credential);
    const { nodes } = (await (await cp.api("/api/nodes")).json()) as { nodes: NodeRow[] };
    expect(nodes.filter((n) => n.name === name)).toHaveLength(1);
    expect(readFileSync(join(root.upper, "etc/quantix-agent.env"), "utf8")).not.toContain("QX_TOKEN");
  });

  it("--uninstall leaves nothing behind", async () => {
    const r = await root.run(`curl -fsSL ${cp.url}/install.sh | sh -s -- --uninstall`);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // Every file the overlay still holds is the root's own, unchanged (the account databases are
    // rewritten by useradd/userdel, with their backups, but end as they began).
    const changed = filesUnder(root.upper).filter((file) => {
      const mine = join(root.upper, file);
      const theirs = join(lower(), file);
      if (statSync(mine).isCharacterDevice()) return existsSync(theirs); // a whiteout: the root lost a file
      if (!existsSync(theirs)) return !/^etc\/(passwd|group|shadow|gshadow)-$/.test(file);
      const sum = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");
      return sum(mine) !== sum(theirs) && !/^etc\/(passwd|group|shadow|gshadow)-?$/.test(file);
    });
    expect(changed).toEqual([]);
    for (const db of ["passwd", "group", "shadow", "gshadow"]) {
      const now = existsSync(join(root.upper, "etc", db)) ? join(root.upper, "etc", db) : join(lower(), "etc", db);
      expect(readFileSync(now, "utf8"), db).toBe(readFileSync(join(lower(), "etc", db), "utf8"));
    }
  });
});

describe("distribution detection", () => {
  let root: IsolatedRoot;
  beforeAll(() => {
    root = new IsolatedRoot();
  });
  afterAll(() => root?.dispose());

  const as = (osRelease: string, args: string) =>
    root.run(`printf '%s\\n' '${osRelease}' > /etc/os-release && curl -fsSL ${cp.url}/install.sh | sh -s -- ${args}`);

  it("takes a RHEL-family host for one (its os-release ID_LIKE), and goes on with the Node.js it finds", async () => {
    const { joinToken } = (await (
      await cp.api("/api/nodes", { method: "POST", json: { name: "rocky-host" } })
    ).json()) as { joinToken: string };
    const r = await as(
      'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nPRETTY_NAME="Rocky Linux 9.5 (Blue Onyx)"',
      `--token ${joinToken}`,
    );
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain("Rocky Linux 9.5 (Blue Onyx) (rhel family)");
    expect(r.stdout).toContain("SHA-256 verified");
  });

  it("refuses a distribution it does not know, saying what it supports", async () => {
    const r = await as('NAME="Alpine Linux"\nID=alpine\nPRETTY_NAME="Alpine Linux v3.20"', "--token qxj_unused");
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("unsupported distribution: Alpine Linux v3.20");
    expect(r.stderr).toContain("Debian/Ubuntu and the RHEL family");
  });
});
