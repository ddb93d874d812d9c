#!/usr/bin/env bash
# Installs a Berth agent host, as ECS Anywhere's ecs-anywhere-install.sh installs an ECS one.
# Run as root from the unpacked package (scripts/package.sh makes it): installs containerd,
# runc and nftables if missing (apt), the binaries into /usr/local/bin, /etc/berth/agent.conf (0600: it holds
# the activation code) and the berth-agent unit, enables and starts containerd and berth-agent,
# then waits until the host is a registered container instance and prints its ARN.
# Re-running it is harmless: files are rewritten only when they differ, the agent is restarted
# only when one of its files changed, and an enrolled agent keeps its certificate.
set -euo pipefail

me=install.sh
usage() {
  cat <<'EOF'
install.sh [--help] --controller URL [--cluster CLUSTER] --activation-id ID --activation-code CODE
           [--ca-fingerprint sha256:HEX | --ca-file FILE] [--no-start] [--timeout SECONDS] [--root DIR]

  --controller string
        (required) the controller's URL: https://HOST:PORT (or http://HOST:PORT on a network
        you trust, without activation).
  --cluster string
        (optional) the cluster the agent joins. By default its value is 'default'.
  --activation-id string
        (required with https://) activation id from `berth ssm create-activation`.
  --activation-code string
        (required with https://) activation code from `berth ssm create-activation`.
  --ca-fingerprint string
        (required with https:// unless --ca-file) the controller CA's fingerprint,
        sha256:<64 hex> as create-activation prints it.
  --ca-file string
        (required with https:// unless --ca-fingerprint) a PEM file holding the controller's CA;
        copied to /etc/berth/ca.pem.
  --no-start
        (optional) install and enable, but do not start the agent nor wait for registration.
  --timeout int
        (optional) seconds to wait for the registration. By default 120.
  --root string
        (optional) install into this directory tree instead of /; services are enabled there
        but not started, and no packages are installed.
EOF
}

# Bad arguments: one line, exit 2, before anything is changed.
bad() { echo "$me: $*" >&2; exit 2; }
try() { echo ""; echo "# Trying to $*..."; }
ok() { echo "ok"; }
fail() {
  echo "$me: $*" >&2
  echo ""
  echo "Installation Failed" >&2
  exit 1
}

controller=
cluster=default
activation_id=
activation_code=
ca_fingerprint=
ca_file=
no_start=false
timeout_s=120
root=/
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --no-start) no_start=true; shift; continue ;;
    --controller | --cluster | --activation-id | --activation-code | --ca-fingerprint | --ca-file | --timeout | --root)
      [ $# -ge 2 ] || bad "option $1 needs a value"
      case "$2" in
        "" | --*) bad "option $1 was passed an invalid value: '$2'. Perhaps you passed in an empty env var?" ;;
      esac ;;
    *) bad "unknown option: $1 (see --help)" ;;
  esac
  case "$1" in
    --controller) controller=$2 ;;
    --cluster) cluster=$2 ;;
    --activation-id) activation_id=$2 ;;
    --activation-code) activation_code=$2 ;;
    --ca-fingerprint) ca_fingerprint=$2 ;;
    --ca-file) ca_file=$2 ;;
    --timeout) timeout_s=$2 ;;
    --root) root=$2 ;;
  esac
  shift 2
done

[ -n "$controller" ] || bad "--controller is required (the controller's URL, https://HOST:PORT)"
[[ "$controller" =~ ^(https?)://[A-Za-z0-9._~-]+(:[0-9]{1,5})?/?$ || "$controller" =~ ^(https?)://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?/?$ ]] ||
  bad "--controller must be http(s)://HOST[:PORT], not '$controller'"
scheme=${BASH_REMATCH[1]}
controller=${controller%/}
# ECS's rule for cluster names.
[[ "$cluster" =~ ^[A-Za-z0-9_-]{1,255}$ ]] ||
  bad "--cluster must be 1 to 255 letters, numbers, hyphens and underscores, not '$cluster'"
# Printable, no blanks or quotes: they go into a KEY=VALUE file.
for pair in "activation-id:$activation_id" "activation-code:$activation_code"; do
  v=${pair#*:}
  [ -z "$v" ] || { [[ "$v" =~ ^[[:graph:]]+$ ]] && [[ "$v" != *[\"\'\\]* ]]; } || bad "--${pair%%:*} holds blanks, quotes or control characters"
done
if [ -n "$activation_id" ] && [ -z "$activation_code" ]; then bad "--activation-id needs --activation-code"; fi
if [ -z "$activation_id" ] && [ -n "$activation_code" ]; then bad "--activation-code needs --activation-id"; fi
if [ -n "$ca_fingerprint" ]; then
  hex=$(printf '%s' "$ca_fingerprint" | sed -E 's/^[Ss][Hh][Aa]256://' | tr -d ':' | tr 'A-F' 'a-f')
  [[ "$hex" =~ ^[0-9a-f]{64}$ ]] || bad "--ca-fingerprint must be sha256:<64 hex digits>, not '$ca_fingerprint'"
  ca_fingerprint=sha256:$hex
fi
if [ -n "$ca_file" ]; then
  [ -f "$ca_file" ] && [ -r "$ca_file" ] || bad "--ca-file $ca_file is not a readable file"
  grep -q -- '-----BEGIN CERTIFICATE-----' "$ca_file" || bad "--ca-file $ca_file holds no PEM certificate"
fi
if [ "$scheme" = https ]; then
  [ -n "$activation_id" ] || bad "--activation-id and --activation-code are required with an https:// controller"
  [ -n "$ca_fingerprint" ] || [ -n "$ca_file" ] ||
    bad "an https:// controller needs --ca-fingerprint or --ca-file (create-activation prints the fingerprint)"
else
  [ -z "$activation_id" ] || bad "--activation-code must not cross the network in the clear: use an https:// controller"
  [ -z "$ca_fingerprint" ] && [ -z "$ca_file" ] || bad "--ca-fingerprint and --ca-file need an https:// controller"
fi
[[ "$timeout_s" =~ ^[0-9]+$ ]] && [ "$timeout_s" -gt 0 ] || bad "--timeout must be a positive number of seconds, not '$timeout_s'"
[ -d "$root" ] || bad "--root $root is not a directory"
root=$(cd "$root" && pwd)
[ "$root" != / ] || root=
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then bad "must be run as root (or with --root DIR)"; fi
pkg=$(cd "$(dirname "$0")" && pwd)
for f in bin/berth-agent bin/berth bin/berth-controller systemd/berth-agent.service; do
  [ -f "$pkg/$f" ] || bad "$pkg/$f is missing: run install.sh from the unpacked package (scripts/package.sh makes it)"
done

# systemd is driven only on a host it booted, never into a --root tree.
live_systemd=false
if [ -z "$root" ] && [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  live_systemd=true
fi
sctl() { timeout 90 systemctl "$@"; }

# Installs $1 as $2 with mode $3 unless $2 already holds the same bytes with that mode;
# atomically (a temporary file beside it, then rename). Sets `changed` when it wrote.
changed=false
put() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$src" "$dest.berth-new"
  mv -f "$dest.berth-new" "$dest"
  echo "wrote $dest"
  changed=true
}

if [ -z "$root" ]; then
  try "install containerd, runc and nftables"
  missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  # The agent's bridge and awsvpc networks: port publishing, NAT and security groups.
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  if [ ${#missing[@]} -eq 0 ]; then
    echo "containerd, runc and nftables are already installed"
  else
    command -v apt-get >/dev/null 2>&1 || fail "${missing[*]} missing and no apt-get here: install them, then re-run"
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq || fail "apt-get update failed"
    timeout 900 apt-get install -y -qq "${missing[@]}" >/dev/null || fail "apt-get install ${missing[*]} failed"
  fi
  ok
fi

try "install the berth binaries"
for b in berth berth-agent berth-controller; do
  put "$pkg/bin/$b" "$root/usr/local/bin/$b" 0755
done
ok

try "write /etc/berth/agent.conf"
conf=$root/etc/berth/agent.conf
mkdir -p "$root/etc/berth"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "$ca_file" ]; then
  put "$ca_file" "$root/etc/berth/ca.pem" 0644
fi
managed='BERTH_CONTROLLER|BERTH_CLUSTER|BERTH_ACTIVATION_ID|BERTH_ACTIVATION_CODE|BERTH_CA_FINGERPRINT|BERTH_CA_FILE'
(
  umask 077
  {
    echo "# Written by Berth's install.sh; its keys are rewritten when it runs again, other lines are kept."
    echo "BERTH_CONTROLLER=$controller"
    echo "BERTH_CLUSTER=$cluster"
    if [ -n "$activation_id" ]; then
      echo "BERTH_ACTIVATION_ID=$activation_id"
      echo "BERTH_ACTIVATION_CODE=$activation_code"
    fi
    [ -z "$ca_fingerprint" ] || echo "BERTH_CA_FINGERPRINT=$ca_fingerprint"
    [ -z "$ca_file" ] || echo "BERTH_CA_FILE=/etc/berth/ca.pem"
    # The operator's own settings (BERTH_RESERVED_MEMORY=..., ...) stay.
    if [ -f "$conf" ]; then
      grep -v -E "^[[:space:]]*($managed)[[:space:]]*=|^# Written by Berth's install.sh" "$conf" || true
    fi
  } > "$work/agent.conf"
)
put "$work/agent.conf" "$conf" 0600
ok

try "install the berth-agent unit"
put "$pkg/systemd/berth-agent.service" "$root/etc/systemd/system/berth-agent.service" 0644
ok
# Where the agent keeps agent.json and its certificate (an operator's BERTH_DATA_DIR wins).
data_dir=$(sed -n -E 's/^[[:space:]]*BERTH_DATA_DIR[[:space:]]*=[[:space:]]*"?([^"]*)"?[[:space:]]*$/\1/p' "$conf" | tail -1)
data_dir=$root${data_dir:-/var/lib/berth/agent}

if ! $live_systemd; then
  try "enable berth-agent"
  if [ -n "$root" ]; then
    if command -v systemctl >/dev/null 2>&1; then
      sctl --root="$root" --quiet enable berth-agent.service || fail "systemctl --root=$root enable berth-agent failed"
    else
      echo "no systemctl here: berth-agent.service is installed but not enabled"
    fi
    echo "--root $root: not starting anything, not waiting for the registration."
  else
    echo "systemd is not PID 1 on this host: the files are installed, nothing is enabled or started."
    echo "Start containerd, then berth-agent (it reads /etc/berth/agent.conf)."
  fi
  ok
  exit 0
fi

try "enable and start containerd"
sctl enable --now --quiet containerd.service || fail "systemctl enable --now containerd failed"
ok

try "enable and start berth-agent"
$changed && { sctl daemon-reload || fail "systemctl daemon-reload failed"; }
sctl enable --quiet berth-agent.service || fail "systemctl enable berth-agent failed"
if $no_start; then
  echo "Skip starting berth-agent because --no-start is specified."
  ok
  exit 0
fi
restarts0=$(sctl show -p NRestarts --value berth-agent.service 2>/dev/null || true)
if $changed && sctl is-active --quiet berth-agent.service; then
  sctl restart berth-agent.service || fail "systemctl restart berth-agent failed"
else
  sctl start berth-agent.service || fail "systemctl start berth-agent failed"
fi
ok

try "wait for the agent to register"
arn_of() {
  [ -f "$data_dir/agent.json" ] || return 0
  sed -n -E 's/.*"container_instance_arn"[[:space:]]*:[[:space:]]*"([^"]+)".*/\1/p' "$data_dir/agent.json" | head -1
}
deadline=$(($(date +%s) + timeout_s))
arn=
while :; do
  arn=$(arn_of)
  # With TLS the agent is enrolled once its client certificate is there too.
  if [ -n "$arn" ] && { [ "$scheme" = http ] || [ -s "$data_dir/tls/client.pem" ]; }; then
    break
  fi
  # A unit that failed for good (exit status 5: deregistered; or its start limit) or that keeps
  # restarting (a bad activation, an unreachable controller) will not register by waiting.
  problem=
  if sctl is-failed --quiet berth-agent.service; then
    problem="berth-agent failed ($(sctl show -p Result --value berth-agent.service 2>/dev/null || true))"
  else
    restarts=$(sctl show -p NRestarts --value berth-agent.service 2>/dev/null || true)
    if [[ "$restarts" =~ ^[0-9]+$ && "$restarts0" =~ ^[0-9]+$ ]] && [ $((restarts - restarts0)) -ge 5 ]; then
      problem="berth-agent exited $((restarts - restarts0)) times"
    elif [ "$(date +%s)" -ge "$deadline" ]; then
      problem="timed out after ${timeout_s}s"
    fi
  fi
  if [ -n "$problem" ]; then
    echo "berth-agent's last log lines:" >&2
    timeout 10 journalctl -u berth-agent.service -n 20 --no-pager -o cat >&2 || true
    fail "$problem waiting for berth-agent to register (journalctl -u berth-agent)"
  fi
  sleep 0.5
done
echo "Berth agent registered successfully! Container instance arn: $arn"
echo ""
echo "List the cluster's instances with: berth ecs list-container-instances --cluster $cluster"
ok
