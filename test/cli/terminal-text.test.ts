// What qx prints of a log never carries a terminal control: for any text (property-based), and for
// the sequences terminals act on, in their 7-bit and 8-bit forms.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { forTerminal, jsonForTerminal } from "../../cli/terminal-text.ts";

const ACTS_ON_TERMINAL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/;
// Characters a hostile log is made of: controls, escape introducers and their finals, plain text.
const HOSTILE_CHAR = fc.constantFrom(
  "\x1b",
  "[",
  "]",
  "\\",
  "\x07",
  "\x9b",
  "\x9c",
  "\x9d",
  "\x90",
  "\r",
  "\n",
  "\t",
  "\b",
  "\x00",
  "\x7f",
  "\u202e",
  "0",
  ";",
  "m",
  "P",
  "c",
  "a",
  "€",
  "😀",
  " ",
);

describe("forTerminal", () => {
  it("leaves no control a terminal acts on, whatever the text (property-based)", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: HOSTILE_CHAR, maxLength: 80 }), fc.string({ unit: "binary", maxLength: 80 })),
        (text) => {
          const shown = forTerminal(text);
          expect(shown).not.toMatch(ACTS_ON_TERMINAL);
          expect(forTerminal(shown)).toBe(shown); // already safe text is left alone
        },
      ),
      { numRuns: 2_000 },
    );
  });

  it("keeps text without controls exactly as it is (property-based)", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 80 }), (text) => {
        fc.pre(!ACTS_ON_TERMINAL.test(text) && !text.includes("\r"));
        expect(forTerminal(text)).toBe(text);
      }),
    );
  });

  it("removes whole sequences and escapes lone controls", () => {
    expect(forTerminal("\x1b[1;31mred\x1b[0m")).toBe("red");
    expect(forTerminal("\x1b[?1049h\x1b[?25lalt screen")).toBe("alt screen");
    expect(forTerminal("\x1b]0;title\x1b\\x")).toBe("x");
    expect(forTerminal("\x9d0;title\x9cx")).toBe("x");
    expect(forTerminal("\x1b_apc\x1b\\\x1b^pm\x07\x1bXsos\x9cx")).toBe("x");
    expect(forTerminal("\x1b(0box\x1b(B")).toBe("box");
    expect(forTerminal("\x1b[6n")).toBe(""); // device status report: would make the terminal type an answer
    expect(forTerminal("a\x1b")).toBe("a\\x1b");
    expect(forTerminal("a\x1b]unterminated")).toBe("a\\x1b]unterminated");
    expect(forTerminal("over\rwrite")).toBe("over\\x0dwrite");
    expect(forTerminal("line one\r\nline two\r")).toBe("line one\nline two");
    expect(forTerminal("nul\x00 c1\x85 bidi\u2066")).toBe("nul\\x00 c1\\x85 bidi\\u2066");
  });
});

describe("jsonForTerminal", () => {
  it("is the same JSON value, with nothing a terminal acts on left raw (property-based)", () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.string({ unit: HOSTILE_CHAR, maxLength: 40 }), (value, text) => {
        const data = { value, text };
        const printed = jsonForTerminal(data);
        expect(JSON.parse(printed)).toEqual(JSON.parse(JSON.stringify(data)));
        expect(printed).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/);
      }),
      { numRuns: 500 },
    );
  });
});
