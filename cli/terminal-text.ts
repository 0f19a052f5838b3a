// Text from a VM's log (or any other text the guest or the host can influence) made safe to print on
// an operator's terminal: escape sequences could recolour, hide or rewrite what is shown, set the
// window title, write the clipboard (OSC 52) or answer back into the shell. Whole ESC / CSI / OSC /
// DCS sequences (7-bit and 8-bit forms) are removed, which keeps the text of coloured logs readable;
// any other control character (C0 but \n and \t, DEL, C1) and bidirectional overrides, which reorder
// what is displayed, are shown as visible escapes (`\x07`, `\u202e`) so nothing is silently lost.

// CSI: ESC [ or 0x9B, parameters, intermediates, one final byte.
const CSI = String.raw`(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]`;
// OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \ or 0x9C). Unterminated ones are not
// matched here: their ESC is then escaped below, and the rest is plain text.
const STRING_SEQ = String.raw`(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)`;
// Every other escape sequence: ESC, intermediates, one final byte (charset, keypad mode, RIS reset…),
// but not the introducers above ([ ] P X ^ _): a CSI or string left unfinished is escaped, not eaten.
const OTHER_ESC = String.raw`\x1b[\x20-\x2f]*[\x30-\x4f\x51-\x57\x59\x5a\x5c\x60-\x7e]`;
const SEQUENCE = new RegExp(`${STRING_SEQ}|${CSI}|${OTHER_ESC}`, "g");

const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;
// A CR ending a line is the CRLF of a log written on another system: drop it rather than show it.
const LINE_END_CR = /\r+(?=\n|$)/g;

const visible = (c: string) => {
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
};

/** `text` with no terminal control left in it (see above); \n and \t stay as they are. */
export function forTerminal(text: string): string {
  return text.replace(SEQUENCE, "").replace(LINE_END_CR, "").replace(CONTROL, visible);
}

/** JSON with the characters JSON.stringify leaves raw but a terminal may act on (DEL, C1, bidi
 *  overrides) written as \u escapes: the same JSON value, safe to print. */
export function jsonForTerminal(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(
    /[\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
