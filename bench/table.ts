// The bench table: rows of {name, value, unit, floor?, overFloor?, baseline?, ratio?, target?, met?},
// printed as a fixed-width table and saved as JSON. A row's target and whether it is met come from
// bench/targets.ts.
export type BenchRow = {
  name: string;
  value: number;
  unit: string;
  /** the same figure for the floor probe (bench/floor/), same unit, same run */
  floor?: number;
  /** value − floor */
  overFloor?: number;
  baseline?: number;
  /** value / floor where there is a floor, else value / baseline */
  ratio?: number;
  target?: string;
  met?: boolean;
  note?: string;
};

/** Whether the row meets its target (bench/targets.ts judged it); undefined when it has none. */
export function judge(row: BenchRow): boolean | undefined {
  return row.target === undefined ? undefined : row.met;
}

const fmt = (x: number | undefined) =>
  x === undefined ? "" : Number.isInteger(x) ? x.toLocaleString("en") : String(x);

export function formatTable(rows: BenchRow[]): string {
  const header = ["figure", "value", "floor", "over floor", "baseline", "ratio", "target", "met?"];
  const signed = (x: number | undefined) => (x === undefined ? "" : x > 0 ? `+${fmt(x)}` : fmt(x));
  const body = rows.map((r) => {
    const ok = judge(r);
    return [
      r.name,
      `${fmt(r.value)} ${r.unit}`,
      fmt(r.floor),
      signed(r.overFloor),
      fmt(r.baseline),
      fmt(r.ratio),
      r.target ?? "",
      ok === undefined ? "—" : ok ? "yes" : "NO",
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => "| " + cells.map((c, i) => c.padEnd(widths[i])).join(" | ") + " |";
  const rule = "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|";
  const notes = rows.filter((r) => r.note).map((r) => `  ${r.name}: ${r.note}`);
  return [line(header), rule, ...body.map(line), ...(notes.length ? ["", "notes:", ...notes] : [])].join("\n");
}
