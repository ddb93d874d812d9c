#!/usr/bin/env bash
# Exercises the package under a real systemd as PID 1: boots a Debian bookworm tree with
# `systemd-nspawn -b` (sharing the host's network, throw-away changes: --volatile=overlay),
# copies the package in, runs install.sh inside against a berth-controller on this host, and
# checks that containerd and berth-agent run as systemd services, that the instance registers,
# and that a second install.sh run is harmless. Run as root; not part of `cargo test` (the first
# run debootstraps the tree, a few minutes; later runs take about a minute).
#   scripts/nspawn-install-test.sh [--package TARBALL]   (default: package target/debug's binaries)
#   BERTH_NSPAWN_CACHE   where the Debian tree is kept (default /var/cache/berth-nspawn)
# With binaries that serve TLS (berth-controller --tls), the controller runs with `--tls on`, an
# activation comes from `berth ssm create-activation` and install.sh enrolls the agent with it
# (--activation-id, --activation-code, --ca-fingerprint); binaries without it run the same steps
# over http:// with no activation.
set -euo pipefail
cd "$(dirname "$0")/.."
me=nspawn-install-test.sh
say() { echo "== $*"; }
die() { echo "$me: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"

package=
while [ $# -gt 0 ]; do
  case "$1" in
    --package) [ $# -ge 2 ] || die "--package needs a file"; package=$2; shift 2 ;;
    *) die "unknown option: $1" ;;
  esac
done

cache=${BERTH_NSPAWN_CACHE:-/var/cache/berth-nspawn}
tree=$cache/bookworm
for tool in systemd-nspawn nsenter; do
  command -v "$tool" >/dev/null 2>&1 || {
    say "installing systemd-container"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq systemd-container util-linux >/dev/null
  }
done
if [ ! -x "$tree/lib/systemd/systemd" ]; then
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] ||
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq debootstrap >/dev/null
  say "debootstrap bookworm into $tree (once; a few minutes)"
  mkdir -p "$cache"
  rm -rf "$tree.tmp"
  timeout 1800 /usr/sbin/debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates \
    bookworm "$tree.tmp" http://deb.debian.org/debian
  mv "$tree.tmp" "$tree"
fi

work=$(mktemp -d /tmp/berth-nspawn.XXXXXX)
nspawn_pid=
controller_pid=
cleanup() {
  set +e
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid" # nspawn asks the container's systemd to halt
    for _ in $(seq 1 150); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$nspawn_pid" 2>/dev/null
  fi
  if [ -n "$controller_pid" ]; then kill "$controller_pid" 2>/dev/null; wait "$controller_pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$package" ]; then
  say "packaging target/debug"
  package=$(scripts/package.sh --bin-dir target/debug --out "$work/dist" | tail -1)
fi
mkdir -p "$work/pkg"
tar -C "$work/pkg" -xzf "$package"
pkg=$(echo "$work"/pkg/berth-*)
[ -x "$pkg/install.sh" ] || die "$package holds no install.sh"

say "controller on the host"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tls=off
"$pkg/bin/berth-controller" --help 2>/dev/null | grep -q -- '--tls ' && tls=on
if [ $tls = on ]; then endpoint=https://127.0.0.1:$port; else endpoint=http://127.0.0.1:$port; fi
tls_args=()
[ $tls = off ] || tls_args=(--tls on)
"$pkg/bin/berth-controller" --config /dev/null --listen "127.0.0.1:$port" --data-dir "$work/controller" \
  "${tls_args[@]}" >"$work/controller.log" 2>&1 &
controller_pid=$!
[ $tls = off ] || export BERTH_CA_BUNDLE=$work/controller/ca.pem
berth() { timeout 30 "$pkg/bin/berth" --endpoint-url "$endpoint" "$@"; }
deadline=$(($(date +%s) + 60))
until berth ecs list-clusters >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || { cat "$work/controller.log"; die "the controller did not start"; }
  sleep 0.2
done
berth ecs create-cluster --cluster-name nspawn-cluster --query 'cluster.status' --output text

say "booting $tree under systemd-nspawn"
# --register=no --keep-unit: this host's PID 1 may not be systemd (no machined, no bus); the
# container's own systemd is PID 1 inside either way.
systemd-nspawn -D "$tree" --volatile=overlay --register=no --keep-unit --boot --console=pipe \
  --machine berth-install-test --resolv-conf=copy-host --tmpfs=/var/lib/containerd \
  --bind-ro="$pkg:/opt/berth" </dev/null >"$work/nspawn.log" 2>&1 &
nspawn_pid=$!
init_pid=
deadline=$(($(date +%s) + 60))
# nspawn's child execs the tree's systemd: wait until it has.
while :; do
  init_pid=$(cat "/proc/$nspawn_pid/task/$nspawn_pid/children" 2>/dev/null | awk '{print $1}')
  [ -n "$init_pid" ] && [ "$(cat "/proc/$init_pid/comm" 2>/dev/null)" = systemd ] && break
  kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/nspawn.log"; die "systemd-nspawn exited"; }
  [ "$(date +%s)" -lt "$deadline" ] || die "the container's PID 1 is not systemd (${init_pid:+$(cat "/proc/$init_pid/comm" 2>/dev/null)})"
  sleep 0.2
done
inside() { timeout "${T:-120}" nsenter --target "$init_pid" --mount --uts --ipc --pid -- \
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
deadline=$(($(date +%s) + 60))
until inside test -S /run/systemd/private; do # systemctl's socket, made early in the boot
  [ "$(date +%s)" -lt "$deadline" ] || { cat "$work/nspawn.log"; die "the container's systemd made no /run/systemd/private"; }
  sleep 0.2
done
state=$(inside systemctl is-system-running --wait || true)
echo "container's systemd: $state"
case "$state" in running | degraded) ;; *) inside systemctl --failed --no-pager || true; die "the container did not boot" ;; esac

say "install.sh inside (as ECS Anywhere's install script; installs containerd and runc with apt)"
install_args=(--controller "$endpoint" --cluster nspawn-cluster --timeout 120)
if [ $tls = on ]; then
  berth ssm create-activation --iam-role ecsAnywhereRole --registration-limit 1 >"$work/activation.json"
  activation() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/activation.json" "$1"; }
  install_args+=(--activation-id "$(activation ActivationId)" --activation-code "$(activation ActivationCode)"
    --ca-fingerprint "$(activation CaFingerprint)")
fi
echo "install.sh ${install_args[*]}" | sed 's/--activation-code [^ ]*/--activation-code (hidden)/'
T=900 inside /opt/berth/install.sh "${install_args[@]}" | tee "$work/install1.log"
arn=$(sed -n 's/.*Container instance arn: //p' "$work/install1.log")
[ -n "$arn" ] || die "install.sh printed no container instance ARN"
inside systemctl is-active containerd.service berth-agent.service
inside systemctl show -p MainPID -p NRestarts -p Delegate -p KillMode berth-agent.service
listed=$(berth ecs list-container-instances --cluster nspawn-cluster --query 'containerInstanceArns[0]' --output text)
[ "$listed" = "$arn" ] || die "the controller lists '$listed', install.sh printed '$arn'"
[ "$(inside stat -c %a /etc/berth/agent.conf)" = 600 ] || die "/etc/berth/agent.conf is not 0600"
if [ $tls = on ]; then
  inside stat -c '%a %n' /var/lib/berth/agent/tls/client.key /var/lib/berth/agent/tls/client.pem
  [ "$(inside stat -c %a /var/lib/berth/agent/tls/client.key)" = 600 ] || die "the agent's client key is not 0600"
fi

say "install.sh again: nothing rewritten, agent not restarted, same instance"
pid_before=$(inside systemctl show -p MainPID --value berth-agent.service)
# With TLS the activation is spent (registration limit 1): the enrolled agent keeps its certificate.
T=300 inside /opt/berth/install.sh "${install_args[@]}" | tee "$work/install2.log"
! grep -q '^wrote ' "$work/install2.log" || die "the second run rewrote files"
[ "$(inside systemctl show -p MainPID --value berth-agent.service)" = "$pid_before" ] || die "the second run restarted the agent"
[ "$(sed -n 's/.*Container instance arn: //p' "$work/install2.log")" = "$arn" ] || die "the second run printed another ARN"

say "agent restart under systemd keeps the instance"
inside systemctl restart berth-agent.service
# The restarted agent logs its registration again, as the same instance.
deadline=$(($(date +%s) + 60))
until [ "$(inside journalctl -u berth-agent.service -o cat --no-pager | grep registered | grep -c "$arn")" -ge 2 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || die "the agent did not register again as $arn after a restart"
  sleep 0.5
done
[ "$(berth ecs describe-container-instances --cluster nspawn-cluster --container-instances "$arn" \
  --query 'containerInstances[0].agentConnected' --output text)" = True ] || die "the controller sees the agent disconnected"
[ "$(berth ecs list-container-instances --cluster nspawn-cluster --query 'length(containerInstanceArns)' --output text)" = 1 ] ||
  die "the restart registered a second instance"

say "berth-controller.service (the hardened controller unit) serves under systemd too"
cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
inside sh -c "mkdir -p /etc/berth && echo BERTH_LISTEN=127.0.0.1:$cport > /etc/berth/controller.conf &&
  cp /opt/berth/systemd/berth-controller.service /etc/systemd/system/ && systemctl daemon-reload &&
  systemctl start berth-controller.service"
deadline=$(($(date +%s) + 60))
until timeout 10 "$pkg/bin/berth" --endpoint-url "http://127.0.0.1:$cport" ecs create-cluster --cluster-name in-unit >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || { inside journalctl -u berth-controller.service -n 30 --no-pager -o cat; die "berth-controller.service did not serve"; }
  sleep 0.5
done
inside stat -c '%a %n' /var/lib/berth/controller /var/lib/berth/controller/master.key
[ "$(inside stat -c %a /var/lib/berth/controller)" = 700 ] || die "the controller's state directory is not 0700"
inside systemctl stop berth-controller.service

# On a cgroup v1 (or hybrid) host, systemd-nspawn mounts the container's controller hierarchies
# read-only (and its capability bounding set lacks CAP_SYS_RESOURCE), so no task can get its
# cgroups there: the task stage runs only where the container can create a cgroup.
if ! inside sh -c 'd=/sys/fs/cgroup; [ -f $d/cgroup.controllers ] || d=$d/cpu; mkdir $d/berth-probe && rmdir $d/berth-probe' 2>/dev/null; then
  echo "SKIPPED the task stage: the container cannot create cgroups (systemd-nspawn mounts cgroup v1 controllers read-only)"
  echo "PASS: $arn registered from a systemd-booted Debian tree through install.sh"
  exit 0
fi
say "a task runs under the installed (hardened) unit: containerd + runc inside the tree"
scripts/busybox-image.sh "$work/busybox.tar" >/dev/null
inside mkdir -p /var/tmp/berth
nsenter --target "$init_pid" --mount -- sh -c 'cat > /var/tmp/berth/busybox.tar' <"$work/busybox.tar"
inside berth-agent image load /var/tmp/berth/busybox.tar
berth ecs register-task-definition --family nspawn-sleep --network-mode host \
  --container-definitions '[{"name":"sleep","image":"localhost/busybox:latest","memory":32,"essential":true,"command":["sleep","300"]}]' \
  --query 'taskDefinition.taskDefinitionArn' --output text
task=$(berth ecs run-task --cluster nspawn-cluster --task-definition nspawn-sleep --query 'tasks[0].taskArn' --output text)
deadline=$(($(date +%s) + 90))
status=
until [ "$status" = RUNNING ]; do
  status=$(berth ecs describe-tasks --cluster nspawn-cluster --tasks "$task" --query 'tasks[0].lastStatus' --output text)
  if [ "$status" = STOPPED ] || [ "$(date +%s)" -ge "$deadline" ]; then
    berth ecs describe-tasks --cluster nspawn-cluster --tasks "$task" --query 'tasks[0].[stoppedReason,containers[0].reason]' --output text || true
    inside journalctl -u berth-agent.service -n 30 --no-pager -o cat || true
    die "the task did not reach RUNNING (last status: $status)"
  fi
  sleep 0.5
done
echo "task $task RUNNING"
berth ecs stop-task --cluster nspawn-cluster --task "$task" --query 'task.desiredStatus' --output text
echo "PASS: $arn registered from a systemd-booted Debian tree through install.sh, and ran a task"
