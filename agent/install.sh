#!/bin/sh
# Installs, upgrades (run again) or removes (--uninstall) the Quantix Edge agent on a Debian/Ubuntu or
# RHEL-family host. The control plane serves this file at /install.sh with its own URL filled in:
#   curl -fsSL https://edge.example.com/install.sh | sh -s -- --token <join token>
set -eu

SERVER='@QX_SERVER@'
NODE_MIN='18.17' # the oldest Node.js the agent bundle runs on (Debian 12 ships 18.19)
INSTALL_DIR=/opt/quantix-agent
AGENT_FILE=$INSTALL_DIR/quantix-agent.mjs
STATE_DIR=/var/lib/quantix-agent
ENV_FILE=/etc/quantix-agent.env
UNIT_FILE=/etc/systemd/system/quantix-agent.service
AGENT_USER=quantix

say() { printf 'quantix-agent: %s\n' "$*"; }
die() {
  printf 'quantix-agent: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat <<EOF
usage: sh install.sh [--token JOIN_TOKEN] [--server URL]   install, or upgrade in place when run again
       sh install.sh --uninstall                          remove the agent (VMs are not touched)
EOF
}

TOKEN=''
UNINSTALL=0
while [ $# -gt 0 ]; do
  case $1 in
    --token)
      [ $# -ge 2 ] || die "--token needs a value"
      TOKEN=$2
      shift 2
      ;;
    --token=*)
      TOKEN=${1#--token=}
      shift
      ;;
    --server)
      [ $# -ge 2 ] || die "--server needs a value"
      SERVER=$2
      shift 2
      ;;
    --server=*)
      SERVER=${1#--server=}
      shift
      ;;
    --uninstall)
      UNINSTALL=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
done

[ "$(id -u)" = 0 ] || die "this installer must run as root: it creates a system user, a systemd unit and files under /etc, /opt and /var/lib (pipe it to 'sudo sh -s -- ...')"

systemd_running() { [ -d /run/systemd/system ]; }

if [ "$UNINSTALL" = 1 ]; then
  if systemd_running; then
    systemctl disable --now quantix-agent.service >/dev/null 2>&1 || true
  fi
  rm -f "$UNIT_FILE" "$ENV_FILE"
  rm -rf "$INSTALL_DIR" "$STATE_DIR"
  if systemd_running; then systemctl daemon-reload || true; fi
  if id "$AGENT_USER" >/dev/null 2>&1; then
    # A running agent started by hand (no systemd) would keep the user busy.
    pkill -u "$AGENT_USER" >/dev/null 2>&1 || true
    userdel "$AGENT_USER" >/dev/null 2>&1 || userdel -f "$AGENT_USER" || die "could not remove the user $AGENT_USER"
  fi
  if getent group "$AGENT_USER" >/dev/null 2>&1; then groupdel "$AGENT_USER" >/dev/null 2>&1 || true; fi
  say "removed: the unit, $ENV_FILE, $INSTALL_DIR, $STATE_DIR (the node credential) and the user $AGENT_USER; VMs and libvirt are untouched"
  say "delete the node in the dashboard (or: qx nodes rm <node-id>) if it is gone for good"
  exit 0
fi

case $SERVER in
  http://* | https://*) ;;
  *) die "no control plane URL: pass --server https://your-control-plane (this copy of the script was not served by one)" ;;
esac
SERVER=${SERVER%/}

# ---- the distribution ------------------------------------------------------------------------
[ -r /etc/os-release ] || die "cannot tell the distribution (/etc/os-release is missing): Debian/Ubuntu and the RHEL family are supported; see the README's manual steps"
# shellcheck disable=SC1091
OS_ID=$(. /etc/os-release && printf '%s' "${ID:-}")
OS_LIKE=$(. /etc/os-release && printf '%s' "${ID_LIKE:-}")
OS_NAME=$(. /etc/os-release && printf '%s' "${PRETTY_NAME:-$OS_ID}")
case " $OS_ID $OS_LIKE " in
  *" debian "* | *" ubuntu "*) FAMILY=debian ;;
  *" rhel "* | *" fedora "* | *" centos "*) FAMILY=rhel ;;
  *) die "unsupported distribution: $OS_NAME. Debian/Ubuntu and the RHEL family are supported; elsewhere follow the README's manual steps" ;;
esac
say "$OS_NAME ($FAMILY family)"

# ---- Node.js ---------------------------------------------------------------------------------
# Returns 0 when the node at $1 is at least NODE_MIN.
node_fits() {
  "$1" -e '
    const [a, b] = process.versions.node.split(".").map(Number);
    const [x, y] = process.argv[1].split(".").map(Number);
    process.exit(a > x || (a === x && b >= y) ? 0 : 1);' "$NODE_MIN" 2>/dev/null
}
find_node() {
  for n in /usr/bin/node /usr/bin/nodejs /usr/local/bin/node; do
    if [ -x "$n" ] && node_fits "$n"; then
      NODE=$n
      return 0
    fi
  done
  return 1
}
NODE=''
if ! find_node; then
  # The distribution's own package, from the archive this host already trusts.
  say "installing Node.js (>= $NODE_MIN) from the $OS_NAME package archive"
  if [ "$FAMILY" = debian ]; then
    DEBIAN_FRONTEND=noninteractive apt-get -qq update >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get -qq install -y nodejs >/dev/null || true
  else
    # RHEL 8/9 keep newer Node.js in module streams; RHEL 10 and Fedora have no modules.
    dnf -q -y module enable nodejs:20 >/dev/null 2>&1 || true
    dnf -q -y install nodejs >/dev/null || true
  fi
  find_node || die "Node.js >= $NODE_MIN is needed and $OS_NAME's package does not provide it. Install Node.js 22 from https://nodejs.org/en/download (or NodeSource's packages, which put it at /usr/bin/node), then run this command again"
fi
say "Node.js $("$NODE" -v) at $NODE"

# ---- the agent file --------------------------------------------------------------------------
command -v curl >/dev/null 2>&1 || die "curl is needed"
if command -v sha256sum >/dev/null 2>&1; then
  sha256() { sha256sum "$1" | cut -d' ' -f1; }
else
  die "sha256sum is needed (coreutils)"
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
curl -fsSL "$SERVER/install/manifest.json" -o "$TMP/manifest.json" || die "cannot fetch $SERVER/install/manifest.json"
# {"version":"…","sha256":"…","size":N,…}, one line: read without a JSON tool (the control plane's
# build writes it).
TOP=$(cat "$TMP/manifest.json")
field() { printf '%s\n' "$TOP" | sed -n "s/.*\"$1\":[ ]*\"\{0,1\}\([^\",}]*\).*/\1/p"; }
VERSION=$(field version)
SHA=$(field sha256)
[ -n "$VERSION" ] && [ ${#SHA} = 64 ] || die "the manifest at $SERVER/install/manifest.json is not one this script understands"
curl -fsSL "$SERVER/install/quantix-agent.mjs" -o "$TMP/quantix-agent.mjs" || die "cannot fetch the agent from $SERVER/install/quantix-agent.mjs"
GOT=$(sha256 "$TMP/quantix-agent.mjs")
[ "$GOT" = "$SHA" ] || die "the agent's SHA-256 ($GOT) is not the manifest's ($SHA): not installed"
say "agent $VERSION downloaded, SHA-256 verified"

# ---- the user --------------------------------------------------------------------------------
if ! getent group libvirt >/dev/null 2>&1; then
  # libvirt's own packages create this group and open qemu:///system to it; installed later, they keep it.
  groupadd --system libvirt
  say "libvirt is not installed yet (no group libvirt): created the group; install libvirt (Debian: libvirt-daemon-system, RHEL: libvirt) for the agent to see VMs"
fi
NOLOGIN=/usr/sbin/nologin
[ -x $NOLOGIN ] || NOLOGIN=/sbin/nologin
if ! id "$AGENT_USER" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir "$STATE_DIR" --shell "$NOLOGIN" "$AGENT_USER"
fi
usermod -a -G libvirt "$AGENT_USER"

# ---- files -----------------------------------------------------------------------------------
# The agent replaces its own file when an admin updates it, so the directory is the agent user's.
install -d -m 0755 -o "$AGENT_USER" -g "$AGENT_USER" "$INSTALL_DIR"
install -d -m 0700 -o "$AGENT_USER" -g "$AGENT_USER" "$STATE_DIR"
# Installed afresh: an update swapped in earlier has nothing left to roll back to.
rm -f "$INSTALL_DIR/quantix-agent.previous.mjs" "$STATE_DIR/update.json"
install -m 0755 -o "$AGENT_USER" -g "$AGENT_USER" "$TMP/quantix-agent.mjs" "$AGENT_FILE.new"
mv -f "$AGENT_FILE.new" "$AGENT_FILE" # atomic: a running agent keeps the file it opened

cat >"$TMP/unit" <<'UNIT'
@QX_UNIT@
UNIT
sed "s#/usr/bin/node #$NODE #" "$TMP/unit" >"$UNIT_FILE"
chmod 0644 "$UNIT_FILE"

# The environment file keeps what the unit needs; a join token only until it is spent.
OLD_ENV=''
[ -f "$ENV_FILE" ] && OLD_ENV=$(grep -v '^QX_SERVER=\|^QX_TOKEN=' "$ENV_FILE" || true)
write_env() { # $1: the join token to keep, or empty
  umask 077
  {
    printf 'QX_SERVER=%s\n' "$SERVER"
    [ -z "$1" ] || printf 'QX_TOKEN=%s\n' "$1"
    [ -z "$OLD_ENV" ] || printf '%s\n' "$OLD_ENV"
  } >"$ENV_FILE.new"
  chmod 0600 "$ENV_FILE.new"
  mv -f "$ENV_FILE.new" "$ENV_FILE"
}

# ---- enroll ----------------------------------------------------------------------------------
run_as_agent() {
  QX_STATE_DIR=$STATE_DIR QX_SERVER=$SERVER runuser -u "$AGENT_USER" -- "$NODE" "$AGENT_FILE" "$@"
}
ENROLLED=0
if [ -n "$TOKEN" ]; then
  write_env "$TOKEN"
  # --enroll trades the token for the node credential (kept in the state dir) and exits: 0 done or
  # already done with this token, 3 refused, anything else the control plane could not be reached.
  set +e
  QX_TOKEN=$TOKEN run_as_agent --enroll
  rc=$?
  set -e
  case $rc in
    0) ENROLLED=1 ;;
    3) die "the join token was refused (used, expired or unknown): create a new one (Nodes page: Rotate token) and run the new command" ;;
    *) say "enrollment did not complete now; the agent keeps trying once started, and the join token stays in $ENV_FILE until then (run this command again afterwards to remove it)" ;;
  esac
  [ "$ENROLLED" = 1 ] && write_env ''
elif [ -f "$STATE_DIR/node.json" ]; then
  write_env ''
  ENROLLED=1
else
  die "no node credential on this host yet: pass the node's join token with --token"
fi
say "installed $AGENT_FILE, $UNIT_FILE, $ENV_FILE (0600); user $AGENT_USER in group libvirt"

# ---- start -----------------------------------------------------------------------------------
if systemd_running; then
  systemctl daemon-reload
  systemctl enable quantix-agent.service >/dev/null 2>&1
  systemctl restart quantix-agent.service
  say "agent $VERSION started. Follow it with:"
  printf '  journalctl -u quantix-agent -f\n'
else
  say "systemd is not running here (a container?): the unit is installed for when it is. Start the agent as the unit would:"
  printf '  set -a; . %s; set +a; QX_STATE_DIR=%s MALLOC_ARENA_MAX=2 runuser -u %s -- %s --max-semi-space-size=1 %s\n' \
    "$ENV_FILE" "$STATE_DIR" "$AGENT_USER" "$NODE" "$AGENT_FILE"
  say "with systemd: systemctl enable --now quantix-agent, then journalctl -u quantix-agent -f"
fi
