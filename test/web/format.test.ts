// Formatting shown to operators (web/src/lib/format.ts) and the stuck rule (web/src/lib/vm-state.ts).
import { describe, expect, it } from "vitest";
import { formatBytes, formatDateTime, formatMemory, formatRelativeTime } from "../../web/src/lib/format.ts";
import { isStuck, STUCK_AFTER_MS } from "../../web/src/lib/vm-state.ts";

describe("formatBytes", () => {
  it.each([
    [0, "0 B"],
    [1023, "1023 B"],
    [1024, "1.0 KiB"],
    [1536, "1.5 KiB"],
    [10 * 1024, "10 KiB"],
    [8 * 1024 * 1024, "8.0 MiB"],
    [123 * 1024 ** 3, "123 GiB"],
    [5 * 1024 ** 5, "5120 TiB"],
  ])("%d → %s", (n, text) => expect(formatBytes(n)).toBe(text));

  it("refuses nonsense", () => {
    expect(formatBytes(-1)).toBe("—");
    expect(formatBytes(Number.NaN)).toBe("—");
  });
});

describe("formatRelativeTime", () => {
  const now = Date.parse("2026-11-25T12:00:00Z");
  const ago = (ms: number) => new Date(now - ms).toISOString();
  it.each([
    [1_000, "just now"],
    [12_000, "12 s ago"],
    [59_999, "59 s ago"],
    [60_000, "1 min ago"],
    [5 * 60_000 + 30_000, "5 min ago"],
    [3 * 3_600_000, "3 h ago"],
    [2 * 86_400_000 + 5, "2 d ago"],
    [-5 * 60_000, "in 5 min"],
  ])("%d ms ago → %s", (ms, text) => expect(formatRelativeTime(ago(ms), now)).toBe(text));

  it("says never for no time or an unparsable one", () => {
    expect(formatRelativeTime(null, now)).toBe("never");
    expect(formatRelativeTime("not a date", now)).toBe("never");
  });
});

describe("formatDateTime / formatMemory", () => {
  it("formats a local timestamp and memory sizes", () => {
    expect(formatDateTime("2026-11-25T12:00:00Z")).toMatch(/^2026-11-2[456] \d\d:00:00$/);
    expect(formatDateTime(null)).toBe("—");
    expect(formatMemory(512)).toBe("512 MiB");
    expect(formatMemory(2048)).toBe("2 GiB");
    expect(formatMemory(1536)).toBe("1.5 GiB");
  });
});

describe("isStuck", () => {
  const now = Date.parse("2026-11-25T12:00:00Z");
  const since = (ms: number) => new Date(now - ms).toISOString();
  it("marks only transitional states older than the threshold", () => {
    expect(isStuck({ state: "STOPPING", stateUpdatedAt: since(STUCK_AFTER_MS + 1_000) }, now)).toBe(true);
    expect(isStuck({ state: "STARTING", stateUpdatedAt: since(STUCK_AFTER_MS + 1_000) }, now)).toBe(true);
    expect(isStuck({ state: "CREATING", stateUpdatedAt: since(STUCK_AFTER_MS + 1_000) }, now)).toBe(true);
    expect(isStuck({ state: "STOPPING", stateUpdatedAt: since(5_000) }, now)).toBe(false);
    expect(isStuck({ state: "RUNNING", stateUpdatedAt: since(3_600_000) }, now)).toBe(false);
    expect(isStuck({ state: "STOPPING", stateUpdatedAt: null }, now)).toBe(false);
  });
});
