// `npm start` and a user's own configuration: the demo's long stuck threshold goes to wrangler only
// when the user set none; a value in .dev.vars is left for wrangler to read (a --var would override
// it), one in the environment is passed on.
import { describe, expect, it } from "vitest";
import { varArgs } from "../../scripts/dev-vars.ts";

describe("npm start's vars", () => {
  it("no value of the user's: the demo's", () => {
    expect(varArgs("STUCK_AFTER_MS", "900000", "ADMIN_TOKEN=x\n", {})).toEqual({
      args: ["--var", "STUCK_AFTER_MS:900000"],
      from: "demo",
    });
    expect(varArgs("STUCK_AFTER_MS", "900000", null, { STUCK_AFTER_MS: "" })).toMatchObject({ from: "demo" });
  });

  it("a value in .dev.vars: nothing passed, so wrangler's own reading of .dev.vars stands", () => {
    expect(
      varArgs("STUCK_AFTER_MS", "900000", "ADMIN_TOKEN=x\n  STUCK_AFTER_MS = 15000\n", { STUCK_AFTER_MS: "1" }),
    ).toEqual({ args: [], from: "dev.vars" });
    // A name that only starts the same, or a commented line, is not the user's value.
    expect(varArgs("STUCK_AFTER_MS", "900000", "STUCK_AFTER_MS_OLD=1\n# STUCK_AFTER_MS=2\n", {})).toMatchObject({
      from: "demo",
    });
  });

  it("a value in the environment: passed on", () => {
    expect(varArgs("STUCK_AFTER_MS", "900000", null, { STUCK_AFTER_MS: "20000" })).toEqual({
      args: ["--var", "STUCK_AFTER_MS:20000"],
      from: "environment",
    });
  });
});
