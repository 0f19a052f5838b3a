// A node whose agent link was closed for overspending its work budget or filling its inbox: flagged
// on the node for admins (GET /api/nodes shows it) and told to notification targets once.
import { notify } from "../notifications/notify.ts";

export const AGENT_OVERLOADED = "agent_overloaded";

/** Never throws: a flag must not fail the close that raised it. */
export async function flagOverloadedNode(env: Env, nodeId: string, why: string): Promise<void> {
  try {
    const now = Date.now();
    const message = `agent link closed: ${why}. A stolen credential, a looping agent or a host whose domains flap; rotate the credential if it is not the host's own agent`;
    const [before] = await env.DB.batch([
      env.DB.prepare("SELECT flag_code AS code FROM nodes WHERE id = ?").bind(nodeId),
      env.DB.prepare("UPDATE nodes SET flag_code = ?, flag_message = ?, flag_at = ?, updated_at = ? WHERE id = ?").bind(
        AGENT_OVERLOADED,
        message,
        now,
        now,
        nodeId,
      ),
    ]);
    console.warn(`node ${nodeId}: ${message}`);
    const was = (before?.results[0] as { code: string | null } | undefined)?.code;
    if (was !== AGENT_OVERLOADED) await notify(env, { event: "node.flagged", nodeId, message });
  } catch (err) {
    console.error(`node ${nodeId}: overload flag not written`, err);
  }
}
