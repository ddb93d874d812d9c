//! The table against the model, the model against botocore's ECS model, and the README against
//! the table.

use super::*;
use berth_proto::prost_types::field_descriptor_proto::Type;
use berth_proto::prost_types::{DescriptorProto, FileDescriptorSet};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};

const PACKAGE: &str = ".berth.v1.";

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The messages of ecs.proto, by name.
fn ecs_messages() -> BTreeMap<String, DescriptorProto> {
    let set = FileDescriptorSet::decode(berth_proto::FILE_DESCRIPTOR_SET).unwrap();
    let file = set
        .file
        .into_iter()
        .find(|f| f.name() == "berth/v1/ecs.proto")
        .expect("ecs.proto is in the descriptor set");
    file.message_type
        .into_iter()
        .map(|m| (m.name().to_string(), m))
        .collect()
}

/// The message a field holds, if it is one of ours (not a map entry or a well-known type).
fn nested<'a>(
    messages: &'a BTreeMap<String, DescriptorProto>,
    field: &berth_proto::prost_types::FieldDescriptorProto,
) -> Option<&'a DescriptorProto> {
    let name = field.type_name().strip_prefix(PACKAGE)?;
    // Nested types (X.OptionsEntry) are map entries here.
    (field.r#type() == Type::Message && !name.contains('.'))
        .then(|| messages.get(name))
        .flatten()
}

fn is_map(owner: &DescriptorProto, field: &berth_proto::prost_types::FieldDescriptorProto) -> bool {
    field.r#type() == Type::Message
        && owner.nested_type.iter().any(|n| {
            n.options.as_ref().is_some_and(|o| o.map_entry())
                && field.type_name().ends_with(&format!(".{}", n.name()))
        })
}

/// Every field path (JSON names) under `message`; map fields go into `maps`.
fn walk(
    messages: &BTreeMap<String, DescriptorProto>,
    message: &str,
    prefix: &str,
    paths: &mut BTreeSet<String>,
    maps: &mut BTreeSet<String>,
) {
    let m = &messages[message];
    for field in &m.field {
        let path = format!("{prefix}{}", field.json_name());
        paths.insert(path.clone());
        if is_map(m, field) {
            maps.insert(path.clone());
        }
        if let Some(n) = nested(messages, field) {
            walk(messages, n.name(), &format!("{path}."), paths, maps);
        }
    }
}

fn model_paths(op: Op) -> (BTreeSet<String>, BTreeSet<String>) {
    let messages = ecs_messages();
    let root = match op {
        Op::RegisterTaskDefinition => "RegisterTaskDefinitionRequest",
        Op::RunTask => "RunTaskRequest",
        Op::StartTask => "StartTaskRequest",
    };
    let (mut paths, mut maps) = (BTreeSet::new(), BTreeSet::new());
    walk(&messages, root, "", &mut paths, &mut maps);
    (paths, maps)
}

/// Nothing is dropped without being in the table: every field of RegisterTaskDefinition and
/// RunTask, at every depth, is covered by its own row or its parent's; every member of the
/// task, container, volume and override shapes has a row of its own; no row names a field the
/// model lacks.
#[test]
fn every_field_of_the_model_is_in_the_table() {
    for (op, own_rows) in [
        (Reg, &["", "containerDefinitions.", "volumes."][..]),
        (
            Run,
            &["", "overrides.", "overrides.containerOverrides."][..],
        ),
        (Start, &[""][..]),
    ] {
        let (paths, maps) = model_paths(op);
        let rows: Vec<&str> = FIELDS
            .iter()
            .filter(|f| f.op == op)
            .map(|f| f.path)
            .collect();
        for path in &paths {
            let covered = rows
                .iter()
                .any(|r| path == r || path.starts_with(&format!("{r}.")));
            assert!(covered, "{}: {path} is not in the table", op.name());
            let needs_own_row = own_rows
                .iter()
                .any(|p| path.strip_prefix(p).is_some_and(|rest| !rest.contains('.')));
            assert!(
                !needs_own_row || rows.contains(&path.as_str()),
                "{}: {path} needs a row of its own",
                op.name()
            );
        }
        for row in &rows {
            let in_map = maps.iter().any(|m| {
                row.strip_prefix(&format!("{m}."))
                    .is_some_and(|k| !k.is_empty())
            });
            assert!(
                paths.contains(*row) || in_map,
                "{}: the table names {row}, which the model lacks",
                op.name()
            );
        }
        let mut seen = BTreeSet::new();
        for row in &rows {
            assert!(seen.insert(*row), "{}: {row} twice", op.name());
        }
    }
}

/// botocore's ECS model: the member names of every structure shape.
fn botocore() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(fixtures().join("botocore-ecs-members.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v["shapes"].clone()).unwrap()
}

/// Messages of ecs.proto that model no ECS shape: Berth's own DescribeTaskStats (issue 9; ECS
/// has no such call) and DescribePullProgress (issue 11), served by the Ecs service.
const BERTH_EXTENSIONS: &[&str] = &[
    "NetworkInterfaceStats",
    "ResourceStats",
    "ContainerStats",
    "TaskStats",
    "DescribeTaskStatsRequest",
    "DescribeTaskStatsResponse",
    // Issue 11: DescribePullProgress.
    "ContainerPullProgress",
    "TaskPullProgress",
    "DescribePullProgressRequest",
    "DescribePullProgressResponse",
];

/// The botocore shape a message of ours models (our names follow botocore's but for letter case).
fn shape_of(message: &str) -> String {
    match message {
        "EfsVolumeConfiguration" => "EFSVolumeConfiguration".into(),
        "EfsAuthorizationConfig" => "EFSAuthorizationConfig".into(),
        other => other.to_string(),
    }
}

/// Every JSON name of every message in ecs.proto is a member of the botocore shape it models,
/// spelled as ECS spells it (bindIP, sizeInGiB, enableECSManagedTags); and the shapes of task
/// definitions, RunTask, tasks, containers, container instances and clusters, and every shape
/// inside them, have every member botocore lists.
#[test]
fn json_names_are_botocores_and_the_task_shapes_are_complete() {
    let shapes = botocore();
    let messages = ecs_messages();
    for (name, m) in &messages {
        if BERTH_EXTENSIONS.contains(&name.as_str()) {
            continue;
        }
        let Some(members) = shapes.get(&shape_of(name)) else {
            panic!("{name} models no shape of botocore's ECS model");
        };
        for field in &m.field {
            assert!(
                members.iter().any(|x| x == field.json_name()),
                "{name}.{}: botocore's {} has no such member (it has {members:?})",
                field.json_name(),
                shape_of(name)
            );
        }
    }
    let mut todo: Vec<String> = [
        "RegisterTaskDefinitionRequest",
        "RegisterTaskDefinitionResponse",
        "DescribeTaskDefinitionResponse",
        "TaskDefinition",
        "RunTaskRequest",
        "RunTaskResponse",
        "Task",
        "Container",
        "ContainerInstance",
        "Cluster",
    ]
    .map(String::from)
    .to_vec();
    let mut done = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !done.insert(name.clone()) {
            continue;
        }
        let m = &messages[&name];
        let ours: BTreeSet<&str> = m.field.iter().map(|f| f.json_name()).collect();
        for member in &shapes[&shape_of(&name)] {
            assert!(
                ours.contains(member.as_str()),
                "{name}: botocore's member {member} is missing"
            );
        }
        for field in &m.field {
            if let Some(n) = nested(&messages, field) {
                todo.push(n.name().to_string());
            }
        }
    }
}

/// The generated serde writes the names the descriptor holds.
#[test]
fn serde_spells_members_as_ecs() {
    use berth_proto::v1::*;
    let binding = serde_json::to_value(NetworkBinding {
        bind_ip: Some("0.0.0.0".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(binding["bindIP"], "0.0.0.0", "{binding}");
    let storage = serde_json::to_value(EphemeralStorage { size_in_gi_b: 30 }).unwrap();
    assert_eq!(storage, serde_json::json!({"sizeInGiB": 30}));
    let run = serde_json::to_value(RunTaskRequest {
        enable_ecs_managed_tags: Some(true),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(run["enableECSManagedTags"], true);
    // ECS omits an attribute's target when it has none.
    let attribute = serde_json::to_value(Attribute {
        name: "ecs.os-type".into(),
        value: Some("linux".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        attribute,
        serde_json::json!({"name": "ecs.os-type", "value": "linux"})
    );
    let decoded: NetworkBinding =
        serde_json::from_str(r#"{"bindIP":"10.0.0.1","containerPort":80}"#).unwrap();
    assert_eq!(decoded.bind_ip.as_deref(), Some("10.0.0.1"));
}

/// Stored records keep decoding: an Attribute written when its target was a plain string reads
/// back the same.
#[test]
fn attributes_stored_before_keep_decoding() {
    // name "a", target_type "container-instance", target_id "i" as the former plain strings.
    let mut old = Vec::new();
    for (tag, s) in [(1u8, "a"), (3, "container-instance"), (4, "i")] {
        old.push(tag << 3 | 2);
        old.push(s.len() as u8);
        old.extend_from_slice(s.as_bytes());
    }
    let a = berth_proto::v1::Attribute::decode(old.as_slice()).unwrap();
    assert_eq!(a.target_type.as_deref(), Some("container-instance"));
    assert_eq!(a.target_id.as_deref(), Some("i"));
}

const README_BEGIN: &str = "<!-- fields table: generated from controller/src/service/fields.rs -->";
const README_END: &str = "<!-- end of fields table -->";

/// The README's section is the table. `BERTH_BLESS=1` rewrites it.
#[test]
fn readme_section_is_the_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(begin), Some(end)) = (readme.find(README_BEGIN), readme.find(README_END)) else {
        panic!("README.md lacks the markers {README_BEGIN} … {README_END}");
    };
    let current = &readme[begin + README_BEGIN.len()..end];
    let want = format!("\n{}", readme_section());
    if current != want {
        if std::env::var("BERTH_BLESS").is_ok_and(|v| v == "1") {
            let updated = format!(
                "{}{want}{}",
                &readme[..begin + README_BEGIN.len()],
                &readme[end..]
            );
            std::fs::write(&path, updated).unwrap();
        } else {
            panic!("README.md's fields section differs from the table; run with BERTH_BLESS=1 to regenerate it.\nwant:\n{want}");
        }
    }
}

/// Each unsupported field is refused by name, all in one error, and the values that mean "off"
/// pass.
#[test]
fn unsupported_fields_are_named_together() {
    let req: RegisterTaskDefinitionRequest = serde_json::from_str(
        r#"{"family":"f","enableFaultInjection":false,"containerDefinitions":[
          {"name":"a","image":"i","memory":16},
          {"name":"b","image":"i","memory":16,"resourceRequirements":[{"type":"GPU","value":"1"},{"type":"NeuronDevice","value":"1"},{"type":"GPU","value":"2"}],"credentialSpecs":["x"]}]}"#,
    )
    .unwrap();
    let e = refuse_unsupported_registration(&req).unwrap_err();
    assert!(matches!(e, EcsError::Client(_)));
    assert_eq!(
        e.to_string(),
        "containerDefinitions[1].resourceRequirements: types GPU, NeuronDevice are not supported by Berth (GPUs, inference accelerators and Neuron devices); \
         containerDefinitions[1].credentialSpecs: is not supported by Berth (Active Directory gMSA credential specs)"
    );
    let run: RunTaskRequest = serde_json::from_str(
        r#"{"taskDefinition":"f","propagateTags":"NONE","enableECSManagedTags":false}"#,
    )
    .unwrap();
    assert!(refuse_unsupported_run_task(&run).is_ok());
    let run: RunTaskRequest = serde_json::from_str(
        r#"{"taskDefinition":"f","propagateTags":"TASK_DEFINITION","overrides":{"containerOverrides":[{"name":"a","resourceRequirements":[{"type":"InferenceAccelerator","value":"d"}]}]}}"#,
    )
    .unwrap();
    let e = refuse_unsupported_run_task(&run).unwrap_err();
    assert!(matches!(e, EcsError::InvalidParameter(_)));
    let msg = e.to_string();
    assert!(msg.contains("propagateTags: is not supported"), "{msg}");
    assert!(
        msg.contains("overrides.containerOverrides[0].resourceRequirements: type InferenceAccelerator is not supported by Berth"),
        "{msg}"
    );
    let e = refuse_unsupported_overrides(run.overrides.as_ref().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "overrides.containerOverrides[0].resourceRequirements: type InferenceAccelerator"
        ),
        "{e}"
    );
}

/// Service-layer round trips through a real Controller over the in-memory store.
mod registration {
    use super::*;
    use crate::fleet::Fleet;
    use crate::service::Controller;
    use crate::store::memory::MemoryStore;
    use berth_proto::v1::ListTaskDefinitionsRequest;
    use std::sync::Arc;

    fn controller() -> Controller {
        Controller::load(Arc::new(MemoryStore::default()), Arc::new(Fleet::default())).unwrap()
    }

    fn every_field() -> Value {
        let text =
            std::fs::read_to_string(fixtures().join("every-field-task-definition.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The unsupported fields the fixture sets, as the error names them.
    const REFUSED: [&str; 16] = [
        "proxyConfiguration",
        "inferenceAccelerators",
        "enableFaultInjection",
        "containerDefinitions[0].resourceRequirements",
        "containerDefinitions[0].firelensConfiguration",
        "containerDefinitions[0].credentialSpecs",
        "containerDefinitions[0].logConfiguration.secretOptions",
        "volumes[3].s3filesVolumeConfiguration",
        "volumes[1].dockerVolumeConfiguration.driverOpts",
        "volumes[1].dockerVolumeConfiguration.labels",
        "volumes[2].efsVolumeConfiguration.transitEncryption",
        "volumes[2].efsVolumeConfiguration.transitEncryptionPort",
        "volumes[2].efsVolumeConfiguration.authorizationConfig.accessPointId",
        "volumes[2].efsVolumeConfiguration.authorizationConfig.iam",
        "volumes[4].fsxWindowsFileServerVolumeConfiguration",
        "volumes[5].configuredAtLaunch",
    ];

    /// The fixture without its unsupported fields.
    fn supported_part(mut v: Value) -> Value {
        for path in REFUSED {
            let (parent, key) = match path.rsplit_once('.') {
                Some((p, k)) => (p, k),
                None => ("", path),
            };
            let mut at = &mut v;
            for seg in parent.split('.').filter(|s| !s.is_empty()) {
                at = match seg.split_once('[') {
                    Some((name, index)) => {
                        let index: usize = index.trim_end_matches(']').parse().unwrap();
                        &mut at[name][index]
                    }
                    None => &mut at[seg],
                };
            }
            at.as_object_mut().unwrap().remove(key).unwrap();
        }
        v
    }

    /// Whether `big` holds everything `small` does (objects may have more members).
    fn contains(big: &Value, small: &Value, at: &str) -> Result<(), String> {
        match (big, small) {
            (Value::Object(b), Value::Object(s)) => {
                for (k, sv) in s {
                    let bv = b.get(k).ok_or(format!("{at}.{k} is missing"))?;
                    contains(bv, sv, &format!("{at}.{k}"))?;
                }
                Ok(())
            }
            (Value::Array(b), Value::Array(s)) if b.len() == s.len() => {
                for (i, (bv, sv)) in b.iter().zip(s).enumerate() {
                    contains(bv, sv, &format!("{at}[{i}]"))?;
                }
                Ok(())
            }
            _ if big == small => Ok(()),
            _ => Err(format!("{at}: {big} instead of {small}")),
        }
    }

    /// The fixture really sets every field of the model, at every depth.
    #[test]
    fn the_fixture_sets_every_field() {
        let v = every_field();
        let (paths, _) = model_paths(Reg);
        for path in paths {
            let segments: Vec<&str> = path.split('.').collect();
            let mut found = Vec::new();
            occurrences(&v, &segments, "", &mut found);
            assert!(!found.is_empty(), "the fixture does not set {path}");
        }
    }

    /// Issue 6: a real task definition with every ECS field set decodes and is refused only for
    /// what Berth does not support, every such field named in one error; without them it
    /// registers, and DescribeTaskDefinition returns every field given.
    #[tokio::test]
    async fn every_field_task_definition_is_refused_by_name_then_round_trips() {
        let c = controller();
        let full = every_field();
        let req: RegisterTaskDefinitionRequest = serde_json::from_value(full.clone()).unwrap();
        let e = c.register_task_definition(req).await.unwrap_err();
        assert_eq!(e.exception_name(), "ClientException");
        let msg = e.to_string();
        let named: Vec<&str> = msg
            .split("; ")
            .map(|part| part.split(':').next().unwrap_or_default())
            .collect();
        let mut want = REFUSED.to_vec();
        want.sort();
        let mut got = named.clone();
        got.sort();
        assert_eq!(got, want, "{msg}");
        assert!(
            msg.contains("containerDefinitions[0].resourceRequirements: types GPU, InferenceAccelerator are not supported by Berth"),
            "{msg}"
        );
        let listed = c
            .list_task_definitions(ListTaskDefinitionsRequest {
                status: Some("ALL".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            listed.items.is_empty(),
            "a refused registration stores nothing"
        );

        let mut supported = supported_part(full);
        // The fixture is awsvpc, where ECS refuses hostname and extraHosts (they are checked
        // in networking_tests) and links (validation::lifecycle's tests): registered without
        // them.
        for c in supported["containerDefinitions"].as_array_mut().unwrap() {
            let c = c.as_object_mut().unwrap();
            c.remove("hostname");
            c.remove("extraHosts");
            c.remove("links");
        }
        let req: RegisterTaskDefinitionRequest = serde_json::from_value(supported.clone()).unwrap();
        let registered = c.register_task_definition(req).await.unwrap();
        assert_eq!(
            registered
                .task_definition
                .as_ref()
                .unwrap()
                .task_definition_arn,
            berth_proto::arn::task_definition("every-field", 1)
        );
        let described = c.describe_task_definition("every-field:1").await.unwrap();
        let td = serde_json::to_value(described.task_definition.unwrap()).unwrap();
        let mut given = supported.clone();
        let tags = given.as_object_mut().unwrap().remove("tags").unwrap();
        if let Err(e) = contains(&td, &given, "taskDefinition") {
            panic!("{e}\n{td:#}");
        }
        assert_eq!(serde_json::to_value(&described.tags).unwrap(), tags);
        assert_eq!(td["status"], "ACTIVE");
        assert_eq!(
            td["compatibilities"],
            // awsvpc: ECS Anywhere (EXTERNAL) has no awsvpc mode.
            serde_json::json!(["EC2", "FARGATE"])
        );
    }

    /// The guide's task definition (awsvpc, FARGATE, secrets, awslogs, healthCheck) keeps
    /// registering: everything in it is applied, recorded or coming.
    #[tokio::test]
    async fn the_guides_task_definition_registers() {
        let td = r#"{
          "family": "web-app", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
          "cpu": "512", "memory": "1024",
          "taskRoleArn": "arn:aws:iam::123456789012:role/ecsTaskRole",
          "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
          "containerDefinitions": [{
            "name": "nginx", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-app:latest",
            "cpu": 256, "memory": 512, "essential": true,
            "portMappings": [{"containerPort": 80, "protocol": "tcp"}],
            "environment": [{"name": "ENVIRONMENT", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"}],
            "secrets": [{"name": "DB_PASSWORD", "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password"}],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/web-app",
               "awslogs-region": "us-east-1", "awslogs-stream-prefix": "nginx"}},
            "healthCheck": {"command": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
               "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 60}
          }]
        }"#;
        let c = controller();
        c.register_task_definition(serde_json::from_str(td).unwrap())
            .await
            .unwrap();
    }

    /// RunTask refuses unsupported fields, its overrides' included, before anything else and
    /// with InvalidParameterException.
    #[tokio::test]
    async fn run_task_refuses_unsupported_fields_by_name() {
        let c = controller();
        let req: RunTaskRequest = serde_json::from_str(
            r#"{"taskDefinition":"x","capacityProviderStrategy":[{"capacityProvider":"FARGATE_SPOT"}],
               "overrides":{"inferenceAcceleratorOverrides":[{"deviceName":"d","deviceType":"eia2.medium"}],
               "containerOverrides":[{"name":"a","resourceRequirements":[{"type":"GPU","value":"1"}]}]}}"#,
        )
        .unwrap();
        let e = c.run_task(req).await.unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException");
        let msg = e.to_string();
        for field in [
            "capacityProviderStrategy:",
            "overrides.inferenceAcceleratorOverrides:",
            "overrides.containerOverrides[0].resourceRequirements: type GPU",
        ] {
            assert!(msg.contains(field), "{field} in {msg}");
        }
    }
}
