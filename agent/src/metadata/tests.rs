//! The endpoint's JSON against ECS's v4 field names (agent/handlers/v4 testdata and the
//! "Task metadata endpoint version 4" examples), its routes, tokens and variables.

use super::*;
use serde_json::{json, Value};

const ARN: &str =
    "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c";

fn record(mode: &str) -> TaskRecord {
    let network = match mode {
        "awsvpc" => json!({
            "task_id": "158d1c8083dd49d6b527399fd6414f5c", "mode": "awsvpc",
            "namespaces": {"": {"name": "bb-158d", "interface": {
                "address": "10.0.2.61", "prefix": 24, "gateway": "10.0.2.1",
                "mac": "0e:10:e2:01:bd:91", "host_link": null}}},
            "bindings": [], "awsvpc": null, "network": null}),
        "bridge" => json!({
            "task_id": "158d1c8083dd49d6b527399fd6414f5c", "mode": "bridge",
            "namespaces": {"curl": {"name": "bb-158d-0", "interface": {
                "address": "172.31.0.5", "prefix": 16, "gateway": "172.31.0.1",
                "mac": null, "host_link": null}}},
            "bindings": [{"container": "curl", "container_port": 80, "host_port": 49153,
                "protocol": "tcp", "bind_ip": "0.0.0.0"}],
            "awsvpc": null, "network": null}),
        _ => Value::Null,
    };
    serde_json::from_value(json!({
        "task": {
            "taskArn": ARN,
            "launchType": "EC2",
            "containers": [{"name": "curl", "containerArn": "arn:aws:ecs:us-west-2:111122223333:container/abb51bdd"}]
        },
        "definition": {
            "family": "curltest", "revision": 26, "networkMode": mode, "cpu": "256", "memory": "512",
            "containerDefinitions": [
                {"name": "curl", "image": "busybox:latest", "cpu": 10, "memory": 128,
                 "dockerLabels": {"team": "a"},
                 "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/metadata"}},
                 "restartPolicy": {"enabled": true}},
                {"name": "side", "image": "busybox:latest"}
            ]
        },
        "desired_status": "RUNNING",
        "state": {
            "taskArn": ARN, "lastStatus": "RUNNING",
            "pullStartedAt": "2020-10-02T00:43:06.202617438Z",
            "pullStoppedAt": "2020-10-02T00:43:06.31288465Z",
            "containers": [
                {"name": "curl", "runtimeId": "158d-curl", "lastStatus": "RUNNING",
                 "imageDigest": "sha256:d691691e", "healthStatus": "HEALTHY", "healthOutput": "ok",
                 "healthCheckedAt": "2020-10-02T00:44:00Z", "restartCount": 2,
                 "startedAt": "2020-10-02T00:43:06.767535449Z"},
                {"name": "side", "runtimeId": "158d-side", "lastStatus": "STOPPED", "exitCode": 1,
                 "finishedAt": "2020-10-02T00:50:00Z"}
            ]
        },
        "network": network,
        "network_set_up": true
    }))
    .unwrap()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn task_json_has_ecs_v4_field_names() {
    let v = serde_json::to_value(json::task(&record("awsvpc"), "default", Some("lab-1a"))).unwrap();
    assert_eq!(
        keys(&v),
        [
            "AvailabilityZone",
            "Cluster",
            "Containers",
            "DesiredStatus",
            "Family",
            "KnownStatus",
            "LaunchType",
            "Limits",
            "PullStartedAt",
            "PullStoppedAt",
            "Revision",
            "TaskARN"
        ]
    );
    assert_eq!(v["TaskARN"], ARN);
    assert_eq!(v["Revision"], "26", "a string, as ECS writes it");
    assert_eq!(
        v["Limits"],
        json!({"CPU": 0.25, "Memory": 512}),
        "vCPUs and MiB"
    );
    assert_eq!(v["PullStartedAt"], "2020-10-02T00:43:06.202617438Z");
    assert_eq!(v["LaunchType"], "EC2");
    assert_eq!(v["Containers"].as_array().unwrap().len(), 2);
}

#[test]
fn container_json_has_ecs_v4_field_names() {
    let rec = record("awsvpc");
    let v =
        serde_json::to_value(json::container(&rec, "default", &rec.state.containers[0])).unwrap();
    assert_eq!(
        keys(&v),
        [
            "ContainerARN",
            "DesiredStatus",
            "DockerId",
            "DockerName",
            "Health",
            "Image",
            "ImageID",
            "KnownStatus",
            "Labels",
            "Limits",
            "LogDriver",
            "LogOptions",
            "Name",
            "Networks",
            "RestartCount",
            "StartedAt",
            "Type"
        ]
    );
    assert_eq!(v["DockerId"], "158d-curl");
    assert_eq!(v["ImageID"], "sha256:d691691e");
    assert_eq!(v["Type"], "NORMAL");
    assert_eq!(v["Limits"], json!({"CPU": 10.0, "Memory": 128}));
    assert_eq!(v["Labels"]["com.amazonaws.ecs.task-arn"], ARN);
    assert_eq!(
        v["Labels"]["com.amazonaws.ecs.task-definition-version"],
        "26"
    );
    assert_eq!(v["Labels"]["team"], "a");
    assert_eq!(
        v["Health"],
        json!({"status": "HEALTHY", "statusSince": "2020-10-02T00:44:00Z", "output": "ok"})
    );
    assert_eq!(v["RestartCount"], 2);
    assert_eq!(
        v["Networks"],
        json!([{
            "NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.2.61"], "AttachmentIndex": 0,
            "MACAddress": "0e:10:e2:01:bd:91", "IPv4SubnetCIDRBlock": "10.0.2.0/24",
            "SubnetGatewayIpv4Address": "10.0.2.1/24"
        }])
    );
    // The exited one: ExitCode and FinishedAt; no health check, no restart policy.
    let side =
        serde_json::to_value(json::container(&rec, "default", &rec.state.containers[1])).unwrap();
    assert_eq!(side["ExitCode"], 1);
    assert_eq!(side["FinishedAt"], "2020-10-02T00:50:00Z");
    assert!(
        side.get("Health").is_none() && side.get("RestartCount").is_none(),
        "{side}"
    );
    assert!(side.get("StartedAt").is_none());
}

#[test]
fn bridge_containers_show_their_address_and_published_ports() {
    let rec = record("bridge");
    let v =
        serde_json::to_value(json::container(&rec, "default", &rec.state.containers[0])).unwrap();
    assert_eq!(
        v["Networks"],
        json!([{"NetworkMode": "bridge", "IPv4Addresses": ["172.31.0.5"]}])
    );
    assert_eq!(
        v["Ports"],
        json!([{"ContainerPort": 80, "Protocol": "tcp", "HostPort": 49153, "HostIp": "0.0.0.0"}])
    );
    let host = record("host");
    let v =
        serde_json::to_value(json::container(&host, "default", &host.state.containers[0])).unwrap();
    assert_eq!(v["Networks"], json!([{"NetworkMode": "host"}]));
}

#[test]
fn routes_are_the_four_v4_paths_and_v3() {
    assert_eq!(route("/v4/abc"), Some(Route::Container("abc")));
    assert_eq!(route("/v4/abc/"), Some(Route::Container("abc")));
    assert_eq!(route("/v4/abc/task"), Some(Route::Task("abc")));
    assert_eq!(route("/v4/abc/stats"), Some(Route::Stats("abc")));
    assert_eq!(route("/v4/abc/task/stats"), Some(Route::TaskStats("abc")));
    assert_eq!(route("/v3/abc/task"), Some(Route::Task("abc")));
    assert_eq!(route("/v4/"), None);
    assert_eq!(route("/v4/abc/other"), None);
    assert_eq!(route("/v2/metadata"), None);
}

struct Fixed(Vec<TaskRecord>);

impl TaskSource for Fixed {
    fn task(&self, task_arn: &str) -> Option<TaskRecord> {
        self.0.iter().find(|r| r.task.task_arn == task_arn).cloned()
    }
    fn tasks(&self) -> Vec<TaskRecord> {
        self.0.clone()
    }
}

struct NoCgroups;
impl crate::cgroups::Cgroups for NoCgroups {
    fn create_task(
        &self,
        _: &str,
        _: &crate::cgroups::TaskLimits,
    ) -> Result<(), crate::cgroups::CgroupError> {
        Ok(())
    }
    fn container_path(&self, _: &str, _: &str) -> String {
        String::new()
    }
    fn oom_kills(&self, _: &str, _: &str) -> u64 {
        0
    }
    fn remove_task(&self, _: &str) -> Result<(), crate::cgroups::CgroupError> {
        Ok(())
    }
}

fn endpoint(key: u8) -> Endpoint {
    Endpoint::new(
        [key; 32],
        "127.0.0.1:51679".parse().unwrap(),
        "default",
        None,
        Arc::new(Sampler::new(Arc::new(NoCgroups))),
    )
}

#[test]
fn tokens_are_128_bits_per_container_and_keyed() {
    let e = endpoint(1);
    let t = e.token(ARN, "curl");
    assert_eq!(t.len(), 32);
    assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        t,
        e.token(ARN, "curl"),
        "stable (survives a restart with the same key)"
    );
    assert_ne!(t, e.token(ARN, "side"));
    assert_ne!(
        t,
        endpoint(2).token(ARN, "curl"),
        "another key, another token"
    );
}

#[test]
fn variables_point_at_169_254_170_2_or_the_host_listener_and_none_gets_none() {
    let e = endpoint(1);
    let t = e.token(ARN, "curl");
    let env: BTreeMap<_, _> = e
        .environment(ARN, "curl", Mode::Bridge)
        .into_iter()
        .collect();
    assert_eq!(
        env["ECS_CONTAINER_METADATA_URI_V4"],
        format!("http://169.254.170.2:51679/v4/{t}")
    );
    assert_eq!(
        env["ECS_CONTAINER_METADATA_URI"],
        format!("http://169.254.170.2:51679/v3/{t}")
    );
    let host: BTreeMap<_, _> = e.environment(ARN, "curl", Mode::Host).into_iter().collect();
    assert_eq!(
        host["ECS_CONTAINER_METADATA_URI_V4"],
        format!("http://127.0.0.1:51679/v4/{t}")
    );
    assert!(e.environment(ARN, "curl", Mode::None).is_empty());
}

#[test]
fn a_listener_finds_only_containers_of_the_tasks_it_serves() {
    let e = endpoint(1);
    let mut other = record("host");
    other.task.task_arn = "arn:aws:ecs:us-west-2:111122223333:task/default/other".into();
    e.set_source(Arc::new(Fixed(vec![record("bridge"), other.clone()])));
    let mine = e.token(ARN, "curl");
    let theirs = e.token(&other.task.task_arn, "curl");
    let scope = Scope::Task(ARN.into());
    assert_eq!(e.find(&scope, &mine).map(|(_, n)| n), Some("curl".into()));
    assert!(
        e.find(&scope, &theirs).is_none(),
        "another task's token: not found"
    );
    // The host listener serves host-mode tasks only.
    assert_eq!(
        e.find(&Scope::Host, &theirs).map(|(r, _)| r.task.task_arn),
        Some(other.task.task_arn.clone())
    );
    assert!(
        e.find(&Scope::Host, &mine).is_none(),
        "a bridge task's token on the host: not found"
    );
    assert!(e
        .find(&Scope::Host, "0123456789abcdef0123456789abcdef")
        .is_none());
}

#[test]
fn the_key_is_made_once_and_kept() {
    let dir = std::env::temp_dir().join(format!("berth-mdkey-{}", uuid::Uuid::new_v4()));
    let k1 = load_key(&dir).unwrap();
    let k2 = load_key(&dir).unwrap();
    assert_eq!(k1, k2);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("metadata.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::write(dir.join("metadata.key"), b"short").unwrap();
    assert!(load_key(&dir).unwrap_err().to_string().contains("32 bytes"));
    let _ = std::fs::remove_dir_all(&dir);
}
