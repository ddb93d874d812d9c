#!/usr/bin/env bash
# The VM tier: Berth installed under systemd on a real Debian 12 host with only cgroup v2, as a
# user installs it, and driven from this host. The build machines are cgroup v1 hybrid with no
# systemd as PID 1, so this is where the units in systemd/ and the cgroup v2 code run for real.
# Run as root (scripts/test.sh runs it after the main suite):
#   scripts/test-vm.sh
# It builds (or finds cached under $BERTH_VM_CACHE, default /var/cache/berth-vm) the VM image
# (scripts/vm-image.sh), boots it under QEMU (software emulation; user networking with
# restrict=on, so the guest reaches nothing but its forwarded loopback ports), packages Berth
# (scripts/package.sh) and installs it in the guest over ssh: the controller by hand as the
# package README says, the agent with install.sh and an activation. Then it runs five scenarios:
#   1. systemctl enable --now containerd berth-controller berth-agent: the agent registers, the
#      ECS guide's web-app task runs and its page answers through a forwarded port;
#   2. cgroup v2 limits as runc and ECS set them, an OOM kill read from memory.events, and no
#      cgroup left after cleanup;
#   3. restarting, SIGKILLing and stopping berth-agent leaves the containers running, same pids;
#   4. restarting containerd leaves them running and the agent reconnects; then NFS volumes
#      (an EFS volume and a docker volume of another driver, mapped with BERTH_NFS_VOLUMES to
#      the guest's own NFS exports) are mounted, written through, read-only where asked, and
#      unmounted after the cleanup wait with the exports' files kept;
#   5. a reboot: the units come back by themselves, the controller keeps every object, the
#      tasks that did not survive are reported STOPPED with a reason saying so.
# Each check prints "ok" or "FAIL"; the phases print their times; the last line is
# "vm tier: N passed, M failed". The exit status is 0 only when every check passed.
#   BERTH_VM_MEMORY   guest memory in MiB (default 3072; the guide's task takes 1024)
#   BERTH_VM_KEEP=1   keep the run directory (console log, guest journal) even when all passed
# Under CI=true a missing prerequisite (root, KVM-less QEMU, a Debian mirror) fails the tier;
# otherwise the tier says why it cannot run and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
me=test-vm.sh
mem=${BERTH_VM_MEMORY:-3072}
[[ "$mem" =~ ^[0-9]+$ ]] && [ "$mem" -ge 2048 ] ||
  { echo "$me: BERTH_VM_MEMORY must be a number of MiB, at least 2048 (the guide's task takes 1024), not '$mem'" >&2; exit 2; }
qemu_pid=

passed=0
failed=0
failures=()
t_start=$(date +%s)
t_phase=$t_start
phase_name=
phase() { # phase NAME: ends the previous phase (printing its time) and starts NAME
  local now
  now=$(date +%s)
  [ -z "$phase_name" ] || echo "   ($phase_name took $((now - t_phase)) s)"
  phase_name=$1
  t_phase=$now
  [ -z "$1" ] || echo "== $1"
}
unavailable() { # the tier cannot run here
  if [ "${CI:-}" = true ]; then
    echo "$me: $* (CI=true: a missing prerequisite is a failure)" >&2
    failed=$((failed + 1))
    echo "vm tier: $passed passed, $failed failed"
    exit 1
  fi
  echo "$me: skipped: $*" >&2
  exit 0
}
[ "$(id -u)" = 0 ] || unavailable "needs root (QEMU, debootstrap, /var/cache)"
[ "$(uname -m)" = x86_64 ] || unavailable "needs an x86_64 host, not $(uname -m)"
command -v apt-get >/dev/null 2>&1 || unavailable "needs a Debian/Ubuntu host (apt-get)"

check() { # check DESCRIPTION COMMAND...: one check that can fail
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    echo "ok   $what"
  else
    failed=$((failed + 1))
    failures+=("$what")
    echo "FAIL $what"
    [ -z "$out" ] || printf '%s\n' "$out" | tail -15 | sed 's/^/     | /'
    return 1
  fi
}
# fatal WHAT: the rest cannot run (each of its waits would only time out): counts a failure,
# keeps the guest's logs, ends the tier.
fatal() {
  failed=$((failed + 1))
  failures+=("$1 (the remaining checks did not run)")
  echo "FAIL $1: the remaining checks cannot run"
  [ -z "$qemu_pid" ] || save_logs
  finish
}
finish() {
  phase ""
  echo "total: $(($(date +%s) - t_start)) s"
  for f in "${failures[@]}"; do echo "failed: $f"; done
  echo "vm tier: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}
# wait_for SECONDS COMMAND...: runs COMMAND until it succeeds; fails (with its last output)
# after SECONDS. The guest is emulated, so the deadlines are generous.
wait_for() {
  local deadline=$(($(date +%s) + $1)) out
  shift
  while :; do
    if out=$("$@" 2>&1); then return 0; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "timed out after the deadline; last output:"
      printf '%s\n' "$out" | tail -10
      return 1
    fi
    sleep 1
  done
}

# is WHAT WANT COMMAND...: COMMAND succeeds and prints exactly WANT.
is() { local got; got=$("${@:3}") || return 1; [ "$got" = "$2" ] || { echo "$1: got '$got', want '$2'"; return 1; }; }

phase "prerequisites and build"
export DEBIAN_FRONTEND=noninteractive
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
need=()
for p in qemu-system-x86 openssh-client curl busybox-static; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  { timeout 600 apt-get update -qq && timeout 900 apt-get install -y -qq "${need[@]}" >/dev/null; } ||
    unavailable "cannot install ${need[*]}"
fi
timeout 3600 cargo build --quiet -p berth-agent -p berth-controller || fatal "cargo build"
run=$(mktemp -d /var/tmp/berth-vm-run.XXXXXX)
qemu_pid=
cleanup() {
  [ -z "${ssh_opts+x}" ] || timeout 10 ssh "${ssh_opts[@]}" -O exit root@127.0.0.1 >/dev/null 2>&1
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null
    wait "$qemu_pid" 2>/dev/null
  fi
  if [ "$failed" -eq 0 ] && [ "${BERTH_VM_KEEP:-0}" != 1 ]; then
    rm -rf "$run"
  else
    echo "$me: the run's files (console.log, journal.txt) are in $run"
  fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT
pkg=$(bash scripts/package.sh --bin-dir target/debug --out "$run" | tail -1) || fatal "scripts/package.sh"
bash scripts/busybox-image.sh "$run/web-app.tar" localhost/web-app:latest || fatal "building the task image"

phase "VM image (cached under ${BERTH_VM_CACHE:-/var/cache/berth-vm})"
img=$(bash scripts/vm-image.sh | tail -1) && [ -f "$img/ready" ] || unavailable "cannot build the VM image (see above)"
# The run's own copy of the key: a newer image built meanwhile removes this one's directory.
install -m 0600 "$img/id_ed25519" "$run/id_ed25519"

phase "boot"
# Three loopback ports forwarded into the guest: ssh, the controller, the web app.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 30000))
    (: </dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
}
ssh_port=$(free_port)
ctl_port=$(free_port)
web_port=$(free_port)
# Software emulation (KVM is not usable on these machines: ../shared/notes/runtime.md).
# -snapshot keeps the cached image pristine; the guest's writes live for this QEMU process, so
# they survive the reboot of scenario 5 (which happens inside it: no -no-reboot).
boot_vm() {
  # Killed with this script, however it ends (a SIGKILL included): no VM outlives its run.
  setpriv --pdeathsig KILL qemu-system-x86_64 -m "$mem" -smp 2 -nographic -snapshot \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
    -drive "file=$img/root.img,format=raw,if=virtio" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$ctl_port-:7480,hostfwd=tcp:127.0.0.1:$web_port-:8080" \
    -device virtio-net-pci,netdev=n0 \
    -append 'console=ttyS0 rw quiet panic=-1 systemd.unified_cgroup_hierarchy=1' \
    >"$run/console.log" 2>&1 </dev/null &
  qemu_pid=$!
}
# QEMU is running the firmware, or it exited (a forwarded port taken meanwhile).
firmware_or_exit() { grep -q 'Booting' "$run/console.log" || ! kill -0 "$qemu_pid" 2>/dev/null; }
for attempt in 1 2 3; do
  boot_vm
  wait_for 60 firmware_or_exit >/dev/null
  kill -0 "$qemu_pid" 2>/dev/null && break
  echo "QEMU exited at start (attempt $attempt): $(tail -3 "$run/console.log")"
  ssh_port=$(free_port)
  ctl_port=$(free_port)
  web_port=$(free_port)
done
kill -0 "$qemu_pid" 2>/dev/null || qemu_pid= fatal "starting QEMU (its output: $(tail -3 "$run/console.log" | tr '\n' ' '))"
ssh_opts=(-p "$ssh_port" -i "$run/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=20
  -o ServerAliveInterval=5 -o ServerAliveCountMax=4
  -o ControlMaster=auto -o "ControlPath=$run/ssh.sock" -o ControlPersist=600)
# Each call is bounded (so a wait_for overruns its deadline by one call at most).
guest() { timeout 120 ssh "${ssh_opts[@]}" root@127.0.0.1 "$@"; }
guest_up() { kill -0 "$qemu_pid" && timeout 30 ssh "${ssh_opts[@]}" root@127.0.0.1 true; }
if ! wait_for 300 guest_up; then
  echo "$me: the guest did not answer on ssh; its console:" >&2
  tail -40 "$run/console.log" >&2
  qemu_pid_booting=$qemu_pid
  qemu_pid= # no journal to fetch
  kill "$qemu_pid_booting" 2>/dev/null
  fatal "booting the VM"
fi
echo "guest up: $(guest 'uname -r; systemctl --version | head -1' | tr '\n' ' ')"
# What the README's "Proven on" names.
check "the guest is Debian 12, kernel 6.1, systemd 252 as PID 1, containerd 1.6.20, runc 1.1" guest '
  . /etc/os-release && [ "$ID $VERSION_ID" = "debian 12" ] && uname -r | grep -q "^6\.1\." &&
  [ "$(cat /proc/1/comm)" = systemd ] && systemctl --version | grep -q "^systemd 252 " &&
  containerd --version | grep -q " 1\.6\.20" && runc --version | grep -q "^runc version 1\.1\."'

# The host's berth CLI, through the forwarded controller port, with the CA and the admin key
# fetched from the guest once the controller has made them.
berth_bin=$repo/target/debug/berth
export BERTH_ENDPOINT=https://127.0.0.1:$ctl_port
export BERTH_CA_BUNDLE=$run/ca.pem BERTH_SHARED_CREDENTIALS_FILE=$run/admin.credentials
unset BERTH_ACCESS_KEY_ID BERTH_SECRET_ACCESS_KEY BERTH_PROFILE
b() { timeout 60 "$berth_bin" "$@"; }
cluster=web-app-cluster
q() { b ecs "$@" --cluster "$cluster" --output text; } # q COMMAND ARGS... --query ...
task_field() { b ecs describe-tasks --cluster "$cluster" --tasks "$1" --query "tasks[0].$2" --output text; }
task_is() { [ "$(task_field "$1" lastStatus)" = "$2" ]; }
# run_task TASKDEF: prints the new task's ARN; fails with RunTask's failure reason when it placed none.
run_task() {
  local out arn reason
  out=$(b ecs run-task --cluster "$cluster" --task-definition "$1" --query '[tasks[0].taskArn, failures[0].reason]' --output text) || return 1
  read -r arn reason <<<"$out"
  [[ "$arn" == arn:* ]] || { echo "run-task placed no task: $reason" >&2; return 1; }
  echo "$arn"
}
register() { b ecs register-task-definition --cli-input-json "$1" --query 'taskDefinition.taskDefinitionArn' --output text; }
tid() { echo "${1##*/}"; }
# The pids of every process of a task's containers, as the guest's cgroup v2 tree has them.
task_pids() { guest "set -o pipefail; cat /sys/fs/cgroup/berth/$(tid "$1")/*/cgroup.procs | sort -n | tr '\n' ' '"; }
page() { curl -sf --max-time 20 "http://127.0.0.1:$web_port/" | grep -q 'Hello from Berth'; }
main_pid() { guest systemctl show -p MainPID --value "$1"; }
# The units' journal (both boots) into the run directory, whose path cleanup prints.
save_logs() {
  timeout 120 ssh "${ssh_opts[@]}" root@127.0.0.1 'for b in -1 0; do echo "--- boot $b"; journalctl -b $b -u berth-agent -u berth-controller -u containerd --no-pager -o short-precise 2>&1; done' \
    >"$run/journal.txt" 2>&1
  echo "the units' journal: $run/journal.txt; the console: $run/console.log; its last lines:"
  grep -E 'berth-(agent|controller)\[' "$run/journal.txt" | tail -12 | cut -c1-400 | sed 's/^/     | /'

}

phase "install (package, controller by hand, agent with install.sh)"
guest 'mkdir -p /root/pkg && tar -xzf - -C /root/pkg --strip-components=1' <"$pkg" || fatal "copying the package into the guest"
guest 'cat > /root/web-app.tar' <"$run/web-app.tar" || fatal "copying the task image into the guest"
# The controller host's steps from the package README: binaries, unit, settings.
guest 'set -e
install -m 0755 /root/pkg/bin/berth /root/pkg/bin/berth-controller /usr/local/bin/
install -m 0644 /root/pkg/systemd/berth-controller.service /etc/systemd/system/
mkdir -p /etc/berth
printf "BERTH_LISTEN=0.0.0.0:7480\nBERTH_DATA_DIR=/var/lib/berth/controller\n" > /etc/berth/controller.conf
systemctl daemon-reload
systemctl enable --now berth-controller' || fatal "installing the controller"
wait_for 120 guest test -s /var/lib/berth/controller/admin.credentials || fatal "the controller writing its admin key"
guest cat /var/lib/berth/controller/ca.pem >"$run/ca.pem" || fatal "fetching the controller's CA"
( umask 077; guest cat /var/lib/berth/controller/admin.credentials >"$run/admin.credentials" ) || fatal "fetching the admin key"
check "the controller answers signed calls over TLS through the forwarded port" wait_for 60 b ecs list-clusters ||
  fatal "no controller"
b ecs create-cluster --cluster-name "$cluster" --output text --query 'cluster.status' >/dev/null || fatal "create-cluster"
act=$(b ssm create-activation --iam-role ecsAnywhereRole --registration-limit 1 \
  --query '[ActivationId,ActivationCode,CaFingerprint]' --output text) || fatal "create-activation"
read -r act_id act_code ca_fp <<<"$act"
# The agent dials the controller at the host's address, as an agent on another host would: the
# server certificate must name it (the controller lists its addresses when listening on 0.0.0.0).
check "install.sh installs the agent with the activation (not started yet)" \
  guest "/root/pkg/install.sh --controller https://10.0.2.15:7480 --cluster $cluster $(printf -- '--activation-id %q --activation-code %q --ca-fingerprint %q' "$act_id" "$act_code" "$ca_fp") --no-start" ||
  fatal "no agent installed"

phase "scenario 1: systemctl enable --now; the guide's web-app answers"
check "systemd-analyze verify of the installed units (systemd as PID 1)" \
  guest 'out=$(systemd-analyze verify /etc/systemd/system/berth-agent.service /etc/systemd/system/berth-controller.service 2>&1); echo "$out"; [ -z "$out" ]'
check "systemctl enable --now containerd berth-controller berth-agent" \
  guest 'systemctl enable --now containerd berth-controller berth-agent && systemctl is-active containerd berth-controller berth-agent'
registered() {
  local arn
  arn=$(q list-container-instances --query 'containerInstanceArns[0]') && [ "$arn" != None ] &&
    [ "$(q describe-container-instances --container-instances "$arn" --query 'containerInstances[0].[status,agentConnected]')" = $'ACTIVE\tTrue' ]
}
check "the agent registers (ACTIVE, connected)" wait_for 180 registered || fatal "no agent"
instance=$(q list-container-instances --query 'containerInstanceArns[0]')
check "the image loads into the guest's containerd" \
  guest 'berth-agent --config /etc/berth/agent.conf image load /root/web-app.tar'
b secretsmanager create-secret --name db-password --secret-string "vm-$RANDOM$RANDOM" --output text --query ARN >/dev/null ||
  fatal "create-secret"
# The guide's task definition as written, but: host network mode, the local image and busybox's
# httpd on 8080 (the health check asks that port).
cat >"$run/web-app.json" <<'JSON'
{
  "family": "web-app",
  "networkMode": "host",
  "cpu": "512",
  "memory": "1024",
  "taskRoleArn": "arn:aws:iam::123456789012:role/ecsTaskRole",
  "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
  "containerDefinitions": [
    {
      "name": "nginx",
      "image": "localhost/web-app:latest",
      "cpu": 256,
      "memory": 512,
      "essential": true,
      "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
      "portMappings": [{ "containerPort": 8080, "protocol": "tcp" }],
      "environment": [
        { "name": "ENVIRONMENT", "value": "production" },
        { "name": "LOG_LEVEL", "value": "info" }
      ],
      "secrets": [
        { "name": "DB_PASSWORD", "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password" }
      ],
      "logConfiguration": {
        "logDriver": "awslogs",
        "options": { "awslogs-group": "/ecs/web-app", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "nginx" }
      },
      "healthCheck": {
        "command": ["CMD-SHELL", "curl -f http://localhost:8080/ || exit 1"],
        "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 60
      }
    }
  ]
}
JSON
# The guide's step 2: the log group first (awslogs does not create it), with its retention.
check "the guide's log group is made (berth logs create-log-group, put-retention-policy)" \
  sh -c "timeout 60 '$berth_bin' logs create-log-group --log-group-name /ecs/web-app &&
         timeout 60 '$berth_bin' logs put-retention-policy --log-group-name /ecs/web-app --retention-in-days 7"
web_td=$(register "file://$run/web-app.json")
web=$(run_task "$web_td") || fatal "run-task web-app"
check "the web-app task is RUNNING" wait_for 240 task_is "$web" RUNNING || fatal "no task runs"
web_stream() { b logs describe-log-streams --log-group-name /ecs/web-app --order-by LastEventTime --descending \
  --query 'logStreams[].logStreamName' --output text | tr '\t' '\n' | grep -qx "nginx/nginx/$(tid "$web")"; }
check "its awslogs stream nginx/nginx/TASK-ID is in the group (berth logs describe-log-streams)" wait_for 60 web_stream
check "its page answers on the host through the forwarded port" wait_for 60 page
# install.sh again, as an operator re-running it would: nothing changed, so the agent is not
# restarted (and its activation, spent by now, is not needed again).
reinstall() {
  local before
  before=$(main_pid berth-agent) &&
    guest "/root/pkg/install.sh --controller https://10.0.2.15:7480 --cluster $cluster $(printf -- '--activation-id %q --activation-code %q --ca-fingerprint %q' "$act_id" "$act_code" "$ca_fp")" >/dev/null &&
    is "agent MainPID" "$before" main_pid berth-agent
}
check "install.sh again changes nothing and leaves the agent running (same process)" reinstall
check "agent.conf, the admin key and the client key are 0600, the data dirs 0700" is modes \
  "600 600 600 700 700" guest 'stat -c %a /etc/berth/agent.conf /var/lib/berth/controller/admin.credentials /var/lib/berth/agent/tls/client.key /var/lib/berth/agent /var/lib/berth/controller | tr "\n" " " | sed "s/ $//"'

phase "scenario 2: cgroup v2 limits, OOM, cleanup"
check "the guest has cgroup v2 only (cgroup2 at /sys/fs/cgroup, no v1 hierarchy)" \
  guest '[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && ! awk '"'"'$3 == "cgroup" { print; f = 1 } END { exit !f }'"'"' /proc/mounts'
cg() { guest cat "/sys/fs/cgroup/berth/$(tid "$1")/$2"; }
# Task cpu 512 units → a quota of 512/1024 of the 100 ms period; task memory 1024 MiB.
check "web-app task: cpu.max 50000 100000 (task cpu 512)" is cpu.max "50000 100000" cg "$web" cpu.max
check "web-app task: memory.max 1 GiB (task memory 1024)" is memory.max 1073741824 cg "$web" memory.max
# Issue 9: the guide's health check (curl -f, interval 30, startPeriod 60; the image's curl is
# busybox wget) runs in the container through containerd exec, under systemd and cgroup v2.
check "the guide's health check makes the web-app container HEALTHY" \
  wait_for 240 is healthStatus HEALTHY task_field "$web" 'containers[0].healthStatus'
check "…and the task HEALTHY (its essential container)" is healthStatus HEALTHY task_field "$web" healthStatus
cat >"$run/limits.json" <<'JSON'
{"family": "limits", "networkMode": "none",
 "containerDefinitions": [{"name": "app", "image": "localhost/web-app:latest", "cpu": 128, "memory": 128,
   "memoryReservation": 64, "command": ["sleep", "100000"]}]}
JSON
limits_td=$(register "file://$run/limits.json") && limits=$(run_task "$limits_td") || fatal "run-task limits"
check "limits task is RUNNING" wait_for 180 task_is "$limits" RUNNING
# runc's conversion of cpu shares to cpu.weight: 1 + (128 - 2) * 9999 / 262142 = 5.
check "task: cpu.weight 5 (no task cpu: the containers' 128 shares, written by the agent)" is cpu.weight 5 cg "$limits" cpu.weight
check "container: cpu.weight 5 (cpu 128 shares, runc's conversion)" is cpu.weight 5 cg "$limits" app/cpu.weight
check "container: memory.max 128 MiB (memory)" is memory.max 134217728 cg "$limits" app/memory.max
check "container: memory.low 64 MiB (memoryReservation)" is memory.low 67108864 cg "$limits" app/memory.low
check "container: pids.max 4096 (the agent's default pids limit)" is pids.max 4096 cg "$limits" app/pids.max
check "container: its process is in that cgroup" guest "grep -q . /sys/fs/cgroup/berth/$(tid "$limits")/app/cgroup.procs"
cat >"$run/hog.json" <<'JSON'
{"family": "hog", "networkMode": "none",
 "containerDefinitions": [{"name": "hog", "image": "localhost/web-app:latest", "memory": 16,
   "command": ["sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"]}]}
JSON
hog=$(run_task "$(register "file://$run/hog.json")") || fatal "run-task hog"
check "the memory hog is STOPPED" wait_for 240 task_is "$hog" STOPPED
check "…with OutOfMemoryError from memory.events" is reason "OutOfMemoryError: Container killed due to memory usage" task_field "$hog" 'containers[0].reason'
check "…and exit code 137" is exitCode 137 task_field "$hog" 'containers[0].exitCode'
check "stop-task limits" b ecs stop-task --cluster "$cluster" --task "$limits" --reason "vm tier: limits checked"
check "the stopped limits task is STOPPED" wait_for 180 task_is "$limits" STOPPED
check "nothing is left under the cgroup parent of the stopped tasks" \
  guest "[ -d /sys/fs/cgroup/berth ] && [ ! -e /sys/fs/cgroup/berth/$(tid "$limits") ] && [ ! -e /sys/fs/cgroup/berth/$(tid "$hog") ]"

phase "scenario 3: restarting, killing and stopping berth-agent"
cat >"$run/probe.json" <<'JSON'
{"family": "probe", "networkMode": "none",
 "containerDefinitions": [{"name": "probe", "image": "localhost/web-app:latest", "memory": 16,
   "command": ["sh", "-c", "exit 0"]}]}
JSON
probe_td=$(register "file://$run/probe.json")
# Status flows: once the agent is connected again (ECS places no task on a disconnected
# instance), a new task runs to STOPPED with exit code 0 through it.
flows() {
  local t
  wait_for 120 registered && t=$(run_task "$probe_td") && wait_for 240 task_is "$t" STOPPED &&
    is exitCode 0 task_field "$t" 'containers[0].exitCode'
}
pids0=$(task_pids "$web")
check "the web-app's processes are found in its cgroup: $pids0" test -n "${pids0// /}"
same_pids() { is pids "$pids0" task_pids "$web"; }
# The controller still sees the web app RUNNING (a recovery that reported it stopped while its
# processes live would fail here).
web_running() { task_is "$web" RUNNING; }
# replaced UNIT PID: a new process of UNIT, other than PID, runs and the unit is active.
replaced() {
  local p
  p=$(main_pid "$1") && [ "$p" != 0 ] && [ "$p" != "$2" ] && guest systemctl is-active --quiet "$1"
}
agent0=$(main_pid berth-agent)
check "systemctl restart berth-agent" guest systemctl restart berth-agent
check "…a new agent process runs" wait_for 60 replaced berth-agent "$agent0"
check "…the web-app's containers kept their pids" same_pids
check "…status flows (a new task runs to STOPPED, exit code 0)" flows
check "…the web-app is still RUNNING" web_running
agent1=$(main_pid berth-agent)
restarts=$(guest systemctl show -p NRestarts --value berth-agent)
check "systemctl kill -s KILL berth-agent" guest systemctl kill -s KILL berth-agent
came_back() { [ "$(guest systemctl show -p NRestarts --value berth-agent)" -gt "$restarts" ] && replaced berth-agent "$agent1"; }
check "…Restart=on-failure brings it back" wait_for 60 came_back
check "…the web-app's containers kept their pids" same_pids
check "…status flows" flows
check "…the web-app is still RUNNING" web_running
check "systemctl stop berth-agent" guest systemctl stop berth-agent
check "…the agent is stopped" guest '! systemctl is-active --quiet berth-agent'
check "…the web-app's containers still run, same pids" same_pids
check "…its page answers with the agent stopped" page
check "systemctl start berth-agent" guest systemctl start berth-agent
check "…status flows" flows
check "…the web-app's containers kept their pids" same_pids
check "…the web-app is still RUNNING" web_running

phase "scenario 4: restarting containerd"
sleeper=$(run_task "$limits_td") || fatal "run-task sleeper"
check "a second long-running task is RUNNING" wait_for 180 task_is "$sleeper" RUNNING
containerd0=$(main_pid containerd)
agent_before=$(main_pid berth-agent):$(guest systemctl show -p NRestarts --value berth-agent)
check "systemctl restart containerd" guest systemctl restart containerd
check "…containerd runs again (a new process)" wait_for 60 replaced containerd "$containerd0"
check "…the web-app's containers kept their pids (they live in their shims)" same_pids
check "…its page answers" page
check "stop-task after the restart" b ecs stop-task --cluster "$cluster" --task "$sleeper" --reason "vm tier: after the containerd restart"
check "…a task stopped after the restart is reported STOPPED (the agent reconnected)" wait_for 180 task_is "$sleeper" STOPPED
check "…status flows" flows
check "…the web-app is still RUNNING" web_running
agent_now() { echo "$(main_pid berth-agent):$(guest systemctl show -p NRestarts --value berth-agent)"; }
check "…the agent reconnected without restarting (same MainPID:NRestarts)" is agent "$agent_before" agent_now
# Every task but the web app is stopped and cleaned up.
only_web_left() { is "task cgroups" "$(tid "$web")" guest "find /sys/fs/cgroup/berth -mindepth 1 -maxdepth 1 -type d -printf '%f\\n'"; }
check "…and only the web app's cgroup is left under the parent" wait_for 60 only_web_left

phase "scenario 4b: NFS volumes (an export of the guest itself)"
# Issue 9: an efsVolumeConfiguration (keyed by its fileSystemId) and a docker volume of a
# non-local driver (keyed by its name) are NFS mounts when the agent maps them (--nfs-volume).
# The guest's own nfs-kernel-server exports two directories to the guest's address.
check "the guest exports /srv/nfs/efs and /srv/nfs/docker over NFS" guest 'set -e
mkdir -p /srv/nfs/efs/data /srv/nfs/docker
echo seeded-on-the-server > /srv/nfs/efs/data/seed
opts="rw,sync,no_subtree_check,no_root_squash"
printf "/srv/nfs/efs 10.0.2.15($opts)\n/srv/nfs/docker 10.0.2.15($opts)\n" > /etc/exports
systemctl restart nfs-server
exportfs -v | grep -q /srv/nfs/docker'
nfs_agent0=$(main_pid berth-agent)
# The operator's settings in agent.conf (install.sh keeps them); a short cleanup wait, so the
# stopped task's mounts go within the tier.
check "agent.conf maps both keys to the exports (BERTH_NFS_VOLUMES) and the agent restarts" guest 'set -e
printf "BERTH_NFS_VOLUMES=fs-0123456789abcdef0=10.0.2.15:/srv/nfs/efs;scratch=10.0.2.15:/srv/nfs/docker\nBERTH_TASK_CLEANUP_WAIT=5s\n" >> /etc/berth/agent.conf
systemctl restart berth-agent'
check "…a new agent process runs" wait_for 60 replaced berth-agent "$nfs_agent0"
nfs_attribute() {
  b ecs describe-container-instances --cluster "$cluster" --container-instances "$instance" --output json |
    grep -q '"berth.nfs.fs-0123456789abcdef0"'
}
check "…and rejoins advertising attribute berth.nfs.fs-0123456789abcdef0" wait_for 120 nfs_attribute
cat >"$run/nfs.json" <<'JSON'
{"family": "nfs", "networkMode": "none",
 "volumes": [
   {"name": "efs", "efsVolumeConfiguration": {"fileSystemId": "fs-0123456789abcdef0", "rootDirectory": "/data"}},
   {"name": "scratch", "dockerVolumeConfiguration": {"scope": "task", "driver": "rexray/efs"}}],
 "containerDefinitions": [
   {"name": "writer", "image": "localhost/web-app:latest", "memory": 32, "essential": false,
    "command": ["sh", "-c", "grep -q seeded-on-the-server /mnt/efs/seed && echo from-the-task > /mnt/efs/written && echo scratch > /mnt/scratch/written"],
    "mountPoints": [{"sourceVolume": "efs", "containerPath": "/mnt/efs"},
                    {"sourceVolume": "scratch", "containerPath": "/mnt/scratch"}]},
   {"name": "reader", "image": "localhost/web-app:latest", "memory": 32, "essential": true,
    "dependsOn": [{"containerName": "writer", "condition": "SUCCESS"}],
    "command": ["sh", "-c", "grep -q from-the-task /mnt/efs/written || exit 2; if touch /mnt/efs/read-only; then exit 3; fi; exec sleep 100000"],
    "mountPoints": [{"sourceVolume": "efs", "containerPath": "/mnt/efs", "readOnly": true}]}]}
JSON
nfs=$(run_task "$(register "file://$run/nfs.json")") || fatal "run-task nfs"
check "the NFS task is RUNNING (its writer read the server's file and exited 0)" wait_for 240 task_is "$nfs" RUNNING
check "…the writer exited 0" is exitCode 0 task_field "$nfs" "containers[?name=='writer'] | [0].exitCode"
check "…its file reached the EFS export's rootDirectory on the server" \
  is file from-the-task guest cat /srv/nfs/efs/data/written
check "…and the docker volume's export" is file scratch guest cat /srv/nfs/docker/written
nfs_mounts() { guest "awk '\$3 ~ /^nfs/ && \$2 ~ /$(tid "$nfs")/ { print \$1 }' /proc/mounts | sort | tr '\n' ' '"; }
check "…both are NFS mounts of the task's volumes on the guest" \
  is mounts "10.0.2.15:/srv/nfs/docker 10.0.2.15:/srv/nfs/efs/data " nfs_mounts
check "…the readOnly mount point refused the reader's write" guest '[ ! -e /srv/nfs/efs/data/read-only ]'
check "stop-task nfs" b ecs stop-task --cluster "$cluster" --task "$nfs" --reason "vm tier: NFS checked"
check "…and it stops" wait_for 180 task_is "$nfs" STOPPED
no_nfs_mounts() { is mounts "" nfs_mounts; }
check "…after the cleanup wait its NFS mounts are gone" wait_for 120 no_nfs_mounts
check "…and the exports keep their files (unmounted, never deleted through the mount)" \
  guest 'grep -q from-the-task /srv/nfs/efs/data/written && grep -q scratch /srv/nfs/docker/written && [ -f /srv/nfs/efs/data/seed ]'
check "…and the web-app is still RUNNING" web_running

phase "scenario 5: reboot"
sorted() { "$@" | tr '\t' '\n' | sort; }
tds0=$(sorted b ecs list-task-definitions --query 'taskDefinitionArns' --output text)
activations() { b ssm describe-activations --query 'ActivationList[].[ActivationId,RegistrationsCount]' --output text; }
activations0=$(activations)
clusters0=$(sorted b ecs list-clusters --query 'clusterArns' --output text)
stopped0=$(sorted q list-tasks --desired-status STOPPED --query 'taskArns')
boot0=$(guest cat /proc/sys/kernel/random/boot_id)
ssh "${ssh_opts[@]}" -O exit root@127.0.0.1 >/dev/null 2>&1
# A connection of its own (no shared master to be left dangling by the reboot).
timeout 60 ssh -o ControlMaster=no "${ssh_opts[@]}" root@127.0.0.1 'systemctl reboot' >/dev/null 2>&1
new_boot() { local id; id=$(timeout 30 ssh "${ssh_opts[@]}" root@127.0.0.1 cat /proc/sys/kernel/random/boot_id) && [ -n "$id" ] && [ "$id" != "$boot0" ]; }
check "the VM reboots (a new boot id) in the same QEMU process" wait_for 400 new_boot || fatal "no reboot"
check "containerd, berth-controller and berth-agent come back by themselves" \
  wait_for 180 guest systemctl is-active containerd berth-controller berth-agent || fatal "no units after the reboot"
check "the controller kept the cluster" wait_for 60 is clusters "$clusters0" sorted b ecs list-clusters --query 'clusterArns' --output text
check "…the task definitions" is task-definitions "$tds0" sorted b ecs list-task-definitions --query 'taskDefinitionArns' --output text
kept_stopped() { local now; now=$(sorted q list-tasks --desired-status STOPPED --query 'taskArns') && [ -z "$(comm -23 <(echo "$stopped0") <(echo "$now"))" ]; }
check "…the stopped tasks" kept_stopped
check "…the activation and its registration count" is activations "$activations0" activations
check "…and the container instance, which the agent rejoins" wait_for 180 registered
check "…as the same instance" is instance "$instance" q list-container-instances --query 'containerInstanceArns[0]'
check "the web-app task, whose containers did not survive, is reported STOPPED" wait_for 240 task_is "$web" STOPPED
reboot_reason() { task_field "$web" stoppedReason | grep -q 'did not survive a reboot'; }
check "…with a reason saying so: $(task_field "$web" stoppedReason 2>/dev/null)" reboot_reason
check "…its container too, with no exit code" is "container reason, exit code" \
  "CannotInspectContainerError: container did not survive a reboot of its host	None" task_field "$web" 'containers[0].[reason,exitCode]'

web2=$(run_task "$web_td") || fatal "run-task web-app after the reboot"
check "the web-app runs again after the reboot" wait_for 240 task_is "$web2" RUNNING
check "…and its page answers" wait_for 60 page
check "stop-task web-app" b ecs stop-task --cluster "$cluster" --task "$web2" --reason "vm tier: done"
check "…and stops" wait_for 180 task_is "$web2" STOPPED
check "nothing is left under the cgroup parent once every task stopped" \
  guest '[ -d /sys/fs/cgroup/berth ] && ! find /sys/fs/cgroup/berth -mindepth 1 -type d | grep .'

phase "poweroff"
[ "$failed" -eq 0 ] || save_logs
ssh "${ssh_opts[@]}" -O exit root@127.0.0.1 >/dev/null 2>&1
timeout 60 ssh -o ControlMaster=no "${ssh_opts[@]}" root@127.0.0.1 'systemctl --no-block poweroff' >/dev/null 2>&1
qemu_exited() { ! kill -0 "$qemu_pid" 2>/dev/null; }
check "the guest powers off" wait_for 120 qemu_exited
wait "$qemu_pid" 2>/dev/null
finish
