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
  // Colours read mid-transition (a theme switch fades every button) are neither theme's: let the
  // finite animations end first (the follow dot's pulse never does).
  await page.evaluate(() =>
    Promise.all(
      document
        .getAnimations()
        .filter((a) => a.effect?.getTiming().iterations !== Number.POSITIVE_INFINITY)
        .map((a) => a.finished.catch(() => {})),
    ),
  );
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

export type TextContrast = { sample: string; color: string; background: string; ratio: number };

/** The contrast ratio of each distinct text colour on its background inside the elements `selector`
 *  matches (what a reader
 *  of a screenshot would check by hand): the background is every ancestor's colour laid over the
 *  next, colours are read through a canvas (Tailwind's are oklch), ratios per WCAG 2. */
export function textContrasts(page: Page, selector: string): Promise<TextContrast[]> {
  return page.evaluate((selector) => {
    const ctx = document.createElement("canvas").getContext("2d", { willReadFrequently: true })!;
    const rgba = (css: string): [number, number, number, number] => {
      ctx.clearRect(0, 0, 1, 1);
      ctx.fillStyle = "#000";
      ctx.fillStyle = css;
      ctx.fillRect(0, 0, 1, 1);
      const [r, g, b, a] = ctx.getImageData(0, 0, 1, 1).data;
      return [r, g, b, a / 255];
    };
    const over = (top: number[], below: number[]) =>
      top.slice(0, 3).map((c, i) => c * top[3] + below[i] * (1 - top[3]));
    const luminance = (rgb: number[]) => {
      const [r, g, b] = rgb.map((c) => {
        const s = c / 255;
        return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const hex = (rgb: number[]) => `#${rgb.map((c) => Math.round(c).toString(16).padStart(2, "0")).join("")}`;
    const found = new Map<string, { sample: string; color: string; background: string; ratio: number }>();
    const texts: Node[] = [];
    for (const root of document.querySelectorAll(selector)) {
      const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) texts.push(node);
    }
    for (const node of texts) {
      const el = node.parentElement;
      const text = node.textContent?.trim();
      if (!el || !text || !el.checkVisibility() || el.closest(".sr-only")) continue;
      let background = [255, 255, 255];
      const layers: string[] = [];
      for (let a: Element | null = el; a; a = a.parentElement) layers.unshift(getComputedStyle(a).backgroundColor);
      for (const layer of layers) background = over(rgba(layer), background);
      const color = over(rgba(getComputedStyle(el).color), background);
      const [hi, lo] = [luminance(color), luminance(background)].sort((x, y) => y - x);
      const entry = {
        sample: text.slice(0, 50),
        color: hex(color),
        background: hex(background),
        ratio: (hi + 0.05) / (lo + 0.05),
      };
      const key = `${entry.color} on ${entry.background}`;
      if (!found.has(key)) found.set(key, { ...entry, ratio: Math.round(entry.ratio * 100) / 100 });
    }
    return [...found.values()].sort((x, y) => x.ratio - y.ratio);
  }, selector);
}

/** Keeps a named table for the run's accessibility record (beside the axe results). */
export function record(name: string, value: unknown): void {
  const dir = join(ARTIFACTS, "accessibility");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.json`), JSON.stringify(value, null, 2));
}
