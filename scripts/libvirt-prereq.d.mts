// Types for scripts/libvirt-prereq.mjs (plain JS, imported by start.ts and test-prereq.mjs).
export const DAEMON_PACKAGE: string;
export const LIBVIRTD_PATHS: string[];
export function onPath(cmd: string): boolean;
export function isDebianLike(): boolean;
export function isRoot(): boolean;
export function daemonInstalled(): boolean;
export function daemonInstallCommand(): string;
export function aptInstall(pkgs: string[], log?: (line: string) => void): boolean;
export function ensureLibvirtDaemon(log?: (line: string) => void): boolean;
