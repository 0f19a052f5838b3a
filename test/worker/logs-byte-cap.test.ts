// One logs answer carries at most 8 MiB of log text counted in UTF-8 bytes: an agent sending more
// is refused, also when the text is multi-byte and its UTF-16 length stays under the cap.
import { describe, expect, it } from "vitest";
import { MAX_LOG_BYTES } from "../../protocol/wire.ts";
import { utf8Bytes } from "../../protocol/log-excerpt.ts";
import { agentsClosedAfterEach, api, eventually, expectError, json, TestAgent, vmInfo } from "./support.ts";

const agents = agentsClosedAfterEach();

async function vmWithAgent() {
  const s = await TestAgent.forNewNode();
  agents.push(s.agent);
  const vm = vmInfo(`cap-${s.name}`, "running");
  s.agent.inventory([vm]);
  await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  return { ...s, vm };
}

describe("the logs answer's 8 MiB cap", () => {
  it("counts UTF-8 bytes as encoded, surrogate pairs and lone surrogates included", () => {
    for (const text of [
      "",
      "plain ascii\n",
      "тест-вм ошибка",
      "日本語のログ",
      "emoji 💾🔥",
      "lone \ud800 surrogate",
      "é".repeat(1000),
    ]) {
      expect(utf8Bytes(text), text).toBe(new TextEncoder().encode(text).byteLength);
    }
  });

  it("refuses an answer over 8 MiB of UTF-8 whose UTF-16 length is under 8 Mi (Cyrillic text)", async () => {
    const { agent, vm } = await vmWithAgent();
    const pending = api(`/api/vms/${vm.uuid}/logs?lines=10000`);
    const cmd = await agent.next("vm.logs");
    expect(cmd.payload.maxBytes).toBe(MAX_LOG_BYTES);
    // 10 chunks of 480,000 two-byte characters: 9.6 MB of UTF-8, 4.8 M UTF-16 units.
    const chunk = "ж".repeat(479_999) + "\n";
    for (let seq = 0; seq < 10; seq++) agent.reply(cmd, "log.chunk", { seq, text: chunk });
    expect(10 * chunk.length).toBeLessThan(MAX_LOG_BYTES);
    expect(10 * utf8Bytes(chunk)).toBeGreaterThan(MAX_LOG_BYTES);
    agent.reply(cmd, "result", {
      logPath: `/var/log/libvirt/qemu/${vm.name}.log`,
      logSizeBytes: 10 * utf8Bytes(chunk),
      linesReturned: 10,
      truncated: false,
      lastModified: null,
      chunks: 10,
    });
    const err = await expectError(await pending, 502, "agent_error");
    expect(err.message).toContain(`more than ${MAX_LOG_BYTES} bytes`);
  }, 30_000);

  it("accepts an answer of exactly 8 MiB of multi-byte text", async () => {
    const { agent, vm } = await vmWithAgent();
    const pending = api(`/api/vms/${vm.uuid}/logs?lines=10000`);
    const cmd = await agent.next("vm.logs");
    // 16 chunks of 512 KiB each (a frame stays under 1 MiB): 262,143 two-byte characters and two newlines.
    const chunk = "ж".repeat(262_143) + "\n\n";
    expect(utf8Bytes(chunk)).toBe(512 * 1024);
    for (let seq = 0; seq < 16; seq++) agent.reply(cmd, "log.chunk", { seq, text: chunk });
    agent.reply(cmd, "result", {
      logPath: `/var/log/libvirt/qemu/${vm.name}.log`,
      logSizeBytes: MAX_LOG_BYTES,
      linesReturned: 32,
      truncated: true,
      lastModified: null,
      chunks: 16,
    });
    const body = await json(await pending);
    expect(utf8Bytes(body.qemuLog)).toBe(MAX_LOG_BYTES);
  }, 30_000);
});
