// node:http and node:https, loaded with require(). An ESM `import … from "node:http"` makes Node
// build the module's ESM facade by reading every export, and one of them (`WebSocket`) is a lazy
// getter that loads undici and compiles its llhttp WebAssembly: ~10 MiB of idle RSS for code the
// agent never runs. require() hands over the plain object; nothing is read until used.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
export const http = require("node:http") as typeof import("node:http");
export const https = require("node:https") as typeof import("node:https");
