// What `npm start` passes to wrangler dev for a var with a demo default: the user's own value always
// wins. A value in .dev.vars is read by wrangler itself (a `--var` would override it, so none is
// passed); one in the environment is passed on (wrangler dev does not read the environment); only
// when the user set neither does the demo's value go in.
export function varArgs(
  name: string,
  demoValue: string,
  devVars: string | null,
  env: NodeJS.ProcessEnv,
): { args: string[]; from: "dev.vars" | "environment" | "demo" } {
  if (devVars !== null && new RegExp(`^\\s*${name}\\s*=`, "m").test(devVars)) return { args: [], from: "dev.vars" };
  const own = env[name];
  if (own !== undefined && own !== "") return { args: ["--var", `${name}:${own}`], from: "environment" };
  return { args: ["--var", `${name}:${demoValue}`], from: "demo" };
}
