// Types for scripts/libvirt-prereq.mjs (plain JS so that npm's postinstall runs it under any Node).
export function missingPackages(): string[];
export function bindingBuilt(): boolean;
export function ensureLibvirtBinding(): boolean;
export function onPath(cmd: string): boolean;
export function isDebianLike(): boolean;
export function isRoot(): boolean;
export function aptInstall(pkgs: string[], log?: (line: string) => void): boolean;
