// axe-core run inside the page under test: one call audits what the page shows now (a page, a tab,
// an open menu or dialog) and fails on any serious or critical violation (on any at all with
// `anyImpact`). Every audit is also kept,
// counted by rule, in test-artifacts/accessibility/ for a reader comparing runs.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import type { Page } from "playwright-core";
import type { AxeResults, ImpactValue } from "axe-core";
import { expect } from "vitest";
import { ARTIFACTS } from "./harness.ts";

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const FAILING: ImpactValue[] = ["serious", "critical"];

export type AxeFinding = { rule: string; impact: ImpactValue | null; nodes: number; targets: string[]; help: string };

/** Rules left out of an audit, each with the reason a reader of the test needs. */
export type RulesOff = Record<string, string>;

/** Runs axe on the page as it is now and returns its violations (any impact). Injected by evaluation,
 *  not a script tag: the dashboard's CSP refuses inline scripts, and must stay as it is under test. */
export async function audit(page: Page, rulesOff: RulesOff = {}): Promise<AxeFinding[]> {
  if (!(await page.evaluate(() => "axe" in window))) await page.evaluate(AXE_SOURCE);
  const rules = Object.fromEntries(Object.keys(rulesOff).map((id) => [id, { enabled: false }]));
  const results = (await page.evaluate(
    (rules) =>
      (window as unknown as { axe: { run: (ctx: Document, o: object) => Promise<unknown> } }).axe.run(document, {
        rules,
        resultTypes: ["violations"],
      }),
    rules,
  )) as AxeResults;
  return results.violations.map((v) => ({
    rule: v.id,
    impact: v.impact ?? null,
    nodes: v.nodes.length,
    targets: v.nodes.slice(0, 5).map((n) => n.target.join(" ")),
    help: v.help,
  }));
}

const recorded: Record<string, Record<string, string>> = {};

/** Audits the page, records the result under `where` (e.g. "VM Logs tab · dark") and fails on a
 *  serious or critical violation, naming the rule and the first elements it found. */
export async function expectAccessible(
  page: Page,
  where: string,
  opts: { rulesOff?: RulesOff; anyImpact?: boolean } = {},
): Promise<AxeFinding[]> {
  const findings = await audit(page, opts.rulesOff);
  recorded[where] = Object.fromEntries(findings.map((f) => [f.rule, `${f.impact}: ${f.nodes}`]));
  const dir = join(ARTIFACTS, "accessibility");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `axe-${process.pid}.json`), JSON.stringify(recorded, null, 2));
  const failing = opts.anyImpact ? findings : findings.filter((f) => f.impact && FAILING.includes(f.impact));
  // soft: one walk through the pages reports every page's violations, not just the first page's
  expect
    .soft(failing.map((f) => `${where}: ${f.impact} ${f.rule} (${f.help}) on ${f.nodes}: ${f.targets.join(" | ")}`))
    .toEqual([]);
  return findings;
}
