// Where a node's Durable Object lives: near its agent. An object is placed where it is first
// created, and a location hint counts only then, so the agent's own requests (connect, poll, send)
// carry a hint from where Cloudflare saw them arrive; an admin's call never creates a node's object
// (rotate and delete leave alone a node that never connected).
import { z } from "zod";

/** The regions a Durable Object can be asked to start in. */
export type LocationHint = "wnam" | "enam" | "sam" | "weur" | "eeur" | "apac" | "oc" | "afr" | "me";

/** The parts of `request.cf` the choice reads (as Cloudflare gives them; anything else is ignored). */
const ArrivalPlace = z.object({
  continent: z.string().optional().catch(undefined),
  country: z.string().optional().catch(undefined),
  longitude: z.coerce.number().optional().catch(undefined),
});

const MIDDLE_EAST = new Set(["AE", "SA", "QA", "BH", "KW", "OM", "IL", "JO", "LB", "IQ", "IR", "YE", "SY", "PS"]);

/** The hint for an agent whose request arrived at `cf`; undefined lets the platform choose. */
export function locationHintFor(cf: object | undefined): LocationHint | undefined {
  const place = ArrivalPlace.safeParse(cf ?? {});
  if (!place.success) return undefined;
  const { continent, country } = place.data;
  const longitude = place.data.longitude ?? Number.NaN;
  const east = (edge: number) => Number.isFinite(longitude) && longitude >= edge;
  switch (continent) {
    case "NA":
      return Number.isFinite(longitude) && longitude < -100 ? "wnam" : "enam";
    case "SA":
      return "sam";
    case "EU":
      return east(20) ? "eeur" : "weur";
    case "AS":
      return country && MIDDLE_EAST.has(country) ? "me" : "apac";
    case "OC":
      return "oc";
    case "AF":
      return "afr";
    default:
      return undefined;
  }
}
