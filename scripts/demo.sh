#!/usr/bin/env bash
# The main job on one fresh Debian/Ubuntu host, as root: installs what is missing, builds Berth,
# starts containerd + berth-controller + berth-agent on this host (embedded store), registers the
# ECS guide's web-app task definition (awsvpc, FARGATE) and runs it for real with the guide's run-task
# line, then shows it RUNNING and answering on its own address.
#   BERTH_DEMO_DIR    state directory (default /var/lib/berth-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bash scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
state=${BERTH_DEMO_DIR:-/var/lib/berth-demo}
mkdir -p "$state"

echo "== building (release)"
cargo build --release --workspace --quiet
install -m 0755 target/release/berth target/release/berth-controller target/release/berth-agent /usr/local/bin/
export BERTH_ENDPOINT=http://127.0.0.1:7480

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for $what" >&2; exit 1; }
    sleep 0.2
  done
}
systemd=no
[ -d /run/systemd/system ] && systemd=yes

echo "== containerd"
sock=/run/containerd/containerd.sock
if ! ctr -a "$sock" version >/dev/null 2>&1; then
  if [ $systemd = yes ]; then
    systemctl enable --now containerd
  else
    mkdir -p /run/containerd
    nohup containerd >"$state/containerd.log" 2>&1 &
    echo $! > "$state/containerd.pid"
  fi
  wait_for 30 containerd ctr -a "$sock" version
fi

stop_pid() { # stops a daemon this script started earlier and waits for it to exit
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1"); rm -f "$1"
  kill "$pid" 2>/dev/null || return 0
  wait_for 30 "process $pid to exit" sh -c "! kill -0 $pid"
}
echo "== berth-controller"
mkdir -p /etc/berth
cat > /etc/berth/controller.conf <<CONF
BERTH_LISTEN=127.0.0.1:7480
BERTH_DATA_DIR=$state/controller
CONF
if [ $systemd = yes ]; then
  cp systemd/berth-controller.service systemd/berth-agent.service /etc/systemd/system/
  systemctl daemon-reload
  systemctl restart berth-controller
else
  stop_pid "$state/controller.pid"
  nohup berth-controller >"$state/controller.log" 2>&1 &
  echo $! > "$state/controller.pid"
fi
wait_for 30 "the controller" berth ecs list-clusters

berth ecs create-cluster --cluster-name web-app-cluster --settings name=containerInsights,value=enabled \
  --query 'cluster.[clusterName,status]' --output text

echo "== berth-agent"
cat > /etc/berth/agent.conf <<CONF
BERTH_CLUSTER=web-app-cluster
BERTH_CONTROLLER=http://127.0.0.1:7480
BERTH_DATA_DIR=$state/agent
BERTH_CONTAINERD_SOCKET=$sock
CONF
if [ $systemd = yes ]; then
  systemctl restart berth-agent
else
  stop_pid "$state/agent.pid"
  nohup berth-agent >"$state/agent.log" 2>&1 &
  echo $! > "$state/agent.pid"
fi
connected() { [ "$(berth ecs describe-container-instances --cluster web-app-cluster \
  --container-instances "$(berth ecs list-container-instances --cluster web-app-cluster --query 'containerInstanceArns[0]' --output text)" \
  --query 'containerInstances[0].agentConnected' --output text)" = True ]; }
wait_for 30 "the agent to connect" connected

echo "== image (built locally: no registry needed; it serves /www on port 80, as the guide's nginx does, and logs each request to stderr)"
BERTH_IMAGE_CMD='["httpd","-f","-vv","-p","80","-h","/www"]' \
  bash scripts/busybox-image.sh "$state/web-app.tar" localhost/web-app:latest
berth-agent --containerd-socket "$sock" image load "$state/web-app.tar"

# Web apps left from an earlier run: stop them first.
for t in $(berth ecs list-tasks --cluster web-app-cluster --family web-app --query 'taskArns' --output text); do
  [ "$t" = None ] || berth ecs stop-task --cluster web-app-cluster --task "$t" --reason "demo re-run" >/dev/null
done
wait_for 60 "earlier web-app tasks to stop" sh -c "[ \"\$(berth ecs list-tasks --cluster web-app-cluster --family web-app --query 'length(taskArns)')\" = 0 ]"

echo "== the secret the guide's task definition reads (DB_PASSWORD)"
pw="demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
if ! out=$(berth secretsmanager create-secret --name db-password --secret-string "$pw" --query Name --output text 2>&1); then
  case $out in
    *ResourceExistsException*) # an earlier run made it: a new value
      berth secretsmanager put-secret-value --secret-id db-password --secret-string "$pw" >/dev/null
      out=db-password ;;
    *) echo "$out" >&2; exit 1 ;;
  esac
fi
echo "$out"

echo "== a security group that lets this host reach the web app on port 80"
sg=$(berth ec2 describe-security-groups --filters Name=group-name,Values=web-app-sg Name=vpc-id,Values=web-app-cluster \
  --query 'SecurityGroups[0].GroupId' --output text)
if [ "$sg" = None ] || [ -z "$sg" ]; then
  sg=$(berth ec2 create-security-group --group-name web-app-sg --description "web-app tasks" --vpc-id web-app-cluster \
    --query GroupId --output text)
  # The agent's awsvpc subnet (subnet-local, 172.30.0.0/16): this host reaches it from 172.30.0.1.
  berth ec2 authorize-security-group-ingress --group-id "$sg" --protocol tcp --port 80 --cidr 172.30.0.0/16 >/dev/null
fi
echo "security group $sg"

echo "== the guide's step 2: the CloudWatch log group its awslogs driver writes to, kept 7 days"
if ! out=$(berth logs create-log-group --log-group-name /ecs/web-app 2>&1); then
  case $out in
    *ResourceAlreadyExistsException*) echo "log group /ecs/web-app exists (an earlier run)" ;;
    *) echo "$out" >&2; exit 1 ;;
  esac
fi
berth logs put-retention-policy --log-group-name /ecs/web-app --retention-in-days 7

echo "== the guide's task-definition.json (awsvpc, FARGATE), only the image swapped for the local one"
td=$(berth ecs register-task-definition --cli-input-json "file://$repo/scripts/task-definition.json" \
  --query 'taskDefinition.[family,revision]' --output text | tr '\t' ':')
echo "registered $td"
echo "== the guide's run-task line"
task=$(berth ecs run-task \
  --cluster web-app-cluster \
  --task-definition "$td" \
  --count 1 \
  --launch-type FARGATE \
  --network-configuration "awsvpcConfiguration={subnets=[subnet-local],securityGroups=[$sg]}" \
  --query 'tasks[0].taskArn' --output text)
echo "started $task"
running() { [ "$(berth ecs describe-tasks --cluster web-app-cluster --tasks "$task" --query 'tasks[0].lastStatus' --output text)" = RUNNING ]; }
wait_for 60 "the task to be RUNNING" running
berth ecs describe-tasks --cluster web-app-cluster --tasks "$task" \
  --query "tasks[0].{taskArn: taskArn, lastStatus: lastStatus, launchType: launchType, container: containers[0].name, privateIPv4Address: attachments[0].details[?name=='privateIPv4Address'].value | [0]}" --output table
ip=$(berth ecs describe-tasks --cluster web-app-cluster --tasks "$task" \
  --query "tasks[0].attachments[0].details[?name=='privateIPv4Address'].value | [0]" --output text)
wait_for 30 "the web app to answer on its own address" curl -sf "http://$ip/"
echo "== curl http://$ip/  (the task's own address)"
curl -s "http://$ip/"
echo "== the guide's health check (curl -f http://localhost/ || exit 1, every 30 s) in the container"
healthy() { [ "$(berth ecs describe-tasks --cluster web-app-cluster --tasks "$task" --query 'tasks[0].healthStatus' --output text)" = HEALTHY ]; }
wait_for 120 "the task to be HEALTHY" healthy
berth ecs describe-tasks --cluster web-app-cluster --tasks "$task" \
  --query "tasks[0].{healthStatus: healthStatus, container: containers[0].name, containerHealth: containers[0].healthStatus}" --output table
echo "== the guide's 'View logs': its stream nginx/nginx/TASK-ID and the web app's requests in it"
stream="nginx/nginx/${task##*/}"
has_stream() { berth logs describe-log-streams --log-group-name /ecs/web-app --order-by LastEventTime --descending \
  --query 'logStreams[].logStreamName' --output text | tr '\t' '\n' | grep -qx "$stream"; }
wait_for 30 "the task's log stream" has_stream
berth logs describe-log-streams --log-group-name /ecs/web-app --order-by LastEventTime --descending \
  --query 'logStreams[].[logStreamName, lastEventTimestamp]' --output table
berth logs get-log-events --log-group-name /ecs/web-app --log-stream-name "$stream" --limit 5 \
  --query 'events[].message' --output text | tr '\t' '\n'
cat <<MSG

The web app is RUNNING in its own network namespace at $ip. Try:
  berth logs tail /ecs/web-app --follow
  berth logs get-log-events --log-group-name /ecs/web-app --log-stream-name $stream
  berth ecs list-tasks --cluster web-app-cluster
  berth ecs describe-tasks --cluster web-app-cluster --tasks $task --query 'tasks[0].attachments'
  berth ec2 describe-security-groups --group-ids $sg
  berth ecs stop-task --cluster web-app-cluster --task $task --reason "done"
MSG
