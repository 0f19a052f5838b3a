// Whether a control-plane URL would send the join token and the node credential in clear text:
// `http://` / `ws://` to anything but this host's loopback.

/** 127.0.0.0/8, ::1 (also as an IPv4-mapped address) and `localhost`, as WHATWG URL spells hostnames. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  if (host === "localhost" || host === "[::1]") return true;
  if (/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)) return true; // URL has already normalized 0x7f.1 and the like
  return /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(host); // ::ffff:127.x.y.z
}

/** The reason to refuse `server`, or null when it is HTTPS / WSS or on loopback. */
export function cleartextServerProblem(server: string): string | null {
  const url = new URL(server);
  if (url.protocol !== "http:" && url.protocol !== "ws:") return null;
  if (isLoopbackHost(url.hostname)) return null;
  return (
    `${url.protocol}//${url.host} is not encrypted: the join token, the node credential and every command and log would travel in clear text ` +
    `and anyone on the path could take over this node. Use https:// (or wss://), or give --insecure-http (QX_INSECURE_HTTP=1) if the network is trusted`
  );
}
