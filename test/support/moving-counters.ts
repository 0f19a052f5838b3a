// A fake host's domain counters that move with the time since `born`, the way a real host's do: a
// sampler that reads them a few milliseconds apart (a replayed hour) sees small rates, not a fixed
// step per read (which gave figures far past what any host shows, e.g. a node's CPU past 100,000 %).
import type { DomainCounters } from "../../agent/host/libvirt.ts";

export function movingCounters(vms: readonly { uuid: string; name: string }[], born: number): DomainCounters[] {
  const s = (Date.now() - born) / 1000;
  return vms.map((v, i) => ({
    uuid: v.uuid,
    name: v.name,
    vcpus: 1,
    cpuTimeNs: Math.round(s * 1e9 * ((i % 7) / 10)),
    memoryKiB: 524_288,
    maxMemKiB: 524_288,
    running: true,
    stats: new Map([
      ["block.count", 1],
      ["block.0.rd.bytes", Math.round(s * 4096 * i)],
      ["block.0.wr.bytes", Math.round(s * 8192 * i)],
      ["net.count", 1],
      ["net.0.rx.bytes", Math.round(s * 1500 * i)],
      ["net.0.tx.bytes", Math.round(s * 900 * i)],
    ]),
  }));
}
