// What the signed-in role may do (roles): viewers read, operators act on VMs, admins manage
// nodes and tokens. Components ask `useCan(...)` and hide what the role cannot use.
import { createContext, useContext, type ReactNode } from "react";
import { roleRank, type Role } from "../../../protocol/api.ts";

const RoleContext = createContext<Role>("viewer");

export function RoleProvider({ role, children }: { role: Role; children: ReactNode }) {
  return <RoleContext.Provider value={role}>{children}</RoleContext.Provider>;
}

export type Capability = "operate" | "administer";
const needed: Record<Capability, Role> = { operate: "operator", administer: "admin" };

export function useCan(capability: Capability): boolean {
  return roleRank[useContext(RoleContext)] >= roleRank[needed[capability]];
}
