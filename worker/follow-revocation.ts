// A revoked API token also ends the live log follows and consoles opened with it: an open socket is never asked
// for its token again, so the revocation reaches it here, through every session that may hold one.
import { eq } from "drizzle-orm";
import { database } from "./db/client.ts";
import { nodes } from "./db/schema.ts";
import { nodeSession } from "./session/calls.ts";

/** Closes the token's follows on every connected node (a node without an agent link holds no
 *  follow: its viewers are closed as it goes offline). Returns how many were closed. */
export async function closeFollowsOfToken(env: Env, tokenId: string): Promise<number> {
  const connected = await database(env.DB)
    .select({ id: nodes.id })
    .from(nodes)
    .where(eq(nodes.connected, true))
    .limit(100_000);
  const closed = await Promise.allSettled(
    connected.flatMap((n) => [
      nodeSession(env, n.id).closeFollowsOf(tokenId),
      nodeSession(env, n.id).closeConsolesOf(tokenId),
    ]),
  );
  return closed.reduce((sum, r) => sum + (r.status === "fulfilled" ? r.value : 0), 0);
}
