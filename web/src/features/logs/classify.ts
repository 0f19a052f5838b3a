// Classifies QEMU / libvirt log lines as error, warning or normal for highlighting. Pure, so it is
// unit-tested on its own (test/web/classify.test.ts).
export type LineLevel = "error" | "warning" | "normal";

// QEMU's command line (libvirt logs it at every start, one option per line ending in a backslash) carries
// option names like `werror=`, `rerror=`, `timeout=` or paths with "fail" in them: never an error
// by itself. QEMU's own messages start with a timestamp or "qemu-system-…:", never with "-opt ".
const COMMAND_LINE = /^(LC_ALL=|PATH=|HOME=|XDG_\w+=|\/\S*qemu-system-[\w-]+(\s|$)|-[a-z][\w-]*\s)|\s\\$|\bqemu-system-[\w-]+\s+-name\s/;

// An explicit level label ("qemu-system-x86_64: warning: …", libvirt's "1234: error : …") wins
// over the words in the message: QEMU's "warning: failed to …" is still a warning.
const ERROR_LABEL = /(^|[\s:])(error|fatal|critical|panic)\s?:/i;
const WARNING_LABEL = /(^|[\s:])warn(ing)?\s?:/i;

const ERROR_WORDS = [
  /\berrors?\b/i, // word boundaries keep werror=/rerror=/error_policy= out
  /\bfail(s|ed|ure|ing)?\b/i,
  /\bfatal\b/i,
  /\bdenied\b/i,
  /\bno space left\b/i,
  /\bterminating on signal\b/i,
  /\bcannot\b|\bcan't\b|\bcould not\b|\bunable\b/i,
  /\bno such file\b/i,
  /\bi\/o error\b|\bEIO\b/i,
  /\bsegfault|segmentation fault|core dumped\b/i,
  /\bout of memory\b|\boom[- ]kill/i,
  /\bcorrupt(ed|ion)?\b/i,
  /\babort(ed|ing)?\b/i,
  /\bpanic\b/i,
  /\breason=crashed\b/i,
];

const WARNING_WORDS = [
  /\bwarn(s|ed|ing|ings)?\b/i,
  /\bdeprecated\b|\bdeprecation\b/i,
  /\btime(d)? ?out\b|\btimeouts?\b/i,
  /\bretry(ing)?\b|\bretries\b|\bretrying\b/i,
  /\bnot supported\b|\bunsupported\b/i,
  /\bdoesn't support\b|\bdoes not support\b/i,
];

export function classifyLine(line: string): LineLevel {
  if (COMMAND_LINE.test(line)) return "normal";
  if (WARNING_LABEL.test(line) && !ERROR_LABEL.test(line)) return "warning";
  if (ERROR_LABEL.test(line)) return "error";
  if (ERROR_WORDS.some((re) => re.test(line))) return "error";
  if (WARNING_WORDS.some((re) => re.test(line))) return "warning";
  return "normal";
}

/** Splits a log into lines, dropping the empty remainder after a final newline. */
export function splitLines(text: string): string[] {
  if (text === "") return [];
  const lines = text.split(/\r?\n/);
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}
