// The README quotes the bench's table of targets: the copy there is the table in bench/targets.ts,
// row for row, so a target changed in one place cannot go stale in the other.
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { TARGETS } from "../../bench/targets.ts";

const README = readFileSync(join(resolve(import.meta.dirname, "../.."), "README.md"), "utf8");

describe("bench targets", () => {
  it("the README's table of targets is bench/targets.ts's, in order", () => {
    const expected = ["| figure | target |", "| --- | --- |"]
      .concat(Object.values(TARGETS).map((t) => `| ${t.figure} | ${t.text} |`))
      .join("\n");
    expect(README).toContain(expected);
  });

  it("the agent's idle RSS is judged against a bare node process measured beside it", () => {
    expect(TARGETS.agentIdleRss.text).toBe("≤ floor + 16 MiB (floor: a bare `node`)");
    expect(TARGETS.agentIdleRss.met({ value: 60, floor: 45 })).toBe(true);
    expect(TARGETS.agentIdleRss.met({ value: 62, floor: 45 })).toBe(false);
    expect(TARGETS.agentIdleRss.met({ value: 40 })).toBe(false); // no floor measured: not met
  });
});
