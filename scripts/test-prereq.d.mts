// Types for scripts/test-prereq.mjs (plain JS like libvirt-prereq.mjs; vitest.config.ts imports it).
export const SUITES_NEEDING: { hypervisor: string[]; browser: string[] };
export function prepareTestMachine(): Promise<boolean>;
