//! The request and response model the CLI walks, read from the contract's own descriptor set
//! (`berth_proto::FILE_DESCRIPTOR_SET`): flag names, key spellings, value types and skeletons
//! all come from the `.proto`, so a field added there is a flag here with no CLI change.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::FileDescriptorSet;

/// The type of a field's value (of each item, for a list).
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A string (also enums, which Berth keeps as strings).
    Str,
    /// An integer.
    Int,
    /// A floating-point number.
    Float,
    /// A boolean.
    Bool,
    /// A timestamp: an RFC 3339 string in JSON.
    Timestamp,
    /// A structure: the full name of its message (`.berth.v1.TaskOverride`).
    Message(String),
    /// A user map with string keys; the values' kind.
    Map(Box<Kind>),
}

/// A field of a message.
#[derive(Debug, Clone)]
pub struct Field {
    /// The proto name (`task_definition`): the CLI flag is it with dashes.
    pub name: String,
    /// The JSON name (`taskDefinition`): the request key.
    pub json: String,
    /// The value's type.
    pub kind: Kind,
    /// Whether it is a list.
    pub list: bool,
}

impl Field {
    /// The aws CLI flag (without `--`): `task-definition`, `enable-ecs-managed-tags`.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }
}

/// A message: its fields in declaration order.
#[derive(Debug, Clone)]
pub struct Msg {
    /// The full name (`.berth.v1.RunTaskRequest`).
    pub name: String,
    /// Its fields.
    pub fields: Vec<Field>,
}

impl Msg {
    /// The field whose JSON name is `key`, exactly.
    pub fn field(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.json == key)
    }
}

/// An rpc of a service: its name and the full names of its input and output.
#[derive(Debug, Clone)]
pub struct Rpc {
    /// `RunTask`.
    pub name: String,
    /// `.berth.v1.RunTaskRequest`.
    pub input: String,
    /// `.berth.v1.RunTaskResponse`.
    pub output: String,
}

/// The whole model: every message and the rpcs of the user-facing services.
#[derive(Debug)]
pub struct Model {
    messages: HashMap<String, Msg>,
    /// The rpcs of `berth.v1.Ecs`, in declaration order.
    pub ecs: Vec<Rpc>,
    /// The rpcs of every `berth.v1` service the CLI serves (`Ecs`, `Ssm`, `Iam`,
    /// `SecretsManager`), by service name; rpc names are unique across them.
    pub services: Vec<(String, Vec<Rpc>)>,
}

/// The full name of the protobuf timestamp, shown as an RFC 3339 string.
const TIMESTAMP: &str = ".google.protobuf.Timestamp";

impl Model {
    /// Reads the model from an encoded `FileDescriptorSet`.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Model, prost::DecodeError> {
        let set = FileDescriptorSet::decode(bytes)?;
        // Map entries are nested messages flagged `map_entry`: collect them first.
        let mut map_entries: HashMap<String, &prost_types::DescriptorProto> = HashMap::new();
        let mut all: Vec<(String, &prost_types::DescriptorProto)> = Vec::new();
        fn walk<'a>(
            prefix: &str,
            d: &'a prost_types::DescriptorProto,
            all: &mut Vec<(String, &'a prost_types::DescriptorProto)>,
            maps: &mut HashMap<String, &'a prost_types::DescriptorProto>,
        ) {
            let full = format!("{prefix}.{}", d.name());
            for n in &d.nested_type {
                walk(&full, n, all, maps);
            }
            if d.options.as_ref().and_then(|o| o.map_entry) == Some(true) {
                maps.insert(full, d);
            } else {
                all.push((full, d));
            }
        }
        for f in &set.file {
            let prefix = if f.package().is_empty() {
                String::new()
            } else {
                format!(".{}", f.package())
            };
            for d in &f.message_type {
                walk(&prefix, d, &mut all, &mut map_entries);
            }
        }
        fn kind_of(
            f: &prost_types::FieldDescriptorProto,
            maps: &HashMap<String, &prost_types::DescriptorProto>,
        ) -> (Kind, bool) {
            let list = f.label() == Label::Repeated;
            let kind = match f.r#type() {
                Type::String | Type::Bytes | Type::Enum => Kind::Str,
                Type::Int32
                | Type::Int64
                | Type::Uint32
                | Type::Uint64
                | Type::Sint32
                | Type::Sint64
                | Type::Fixed32
                | Type::Fixed64
                | Type::Sfixed32
                | Type::Sfixed64 => Kind::Int,
                Type::Double | Type::Float => Kind::Float,
                Type::Bool => Kind::Bool,
                Type::Message | Type::Group => {
                    let t = f.type_name();
                    if t == TIMESTAMP {
                        Kind::Timestamp
                    } else if let Some(entry) = maps.get(t) {
                        let value = entry
                            .field
                            .iter()
                            .find(|e| e.number() == 2)
                            .map(|e| kind_of(e, maps).0)
                            .unwrap_or(Kind::Str);
                        return (Kind::Map(Box::new(value)), false);
                    } else {
                        Kind::Message(t.to_string())
                    }
                }
            };
            (kind, list)
        }
        let mut messages = HashMap::new();
        for (full, d) in all {
            let fields = d
                .field
                .iter()
                .map(|f| {
                    let (kind, list) = kind_of(f, &map_entries);
                    Field {
                        name: f.name().to_string(),
                        json: f.json_name.clone().unwrap_or_else(|| f.name().to_string()),
                        kind,
                        list,
                    }
                })
                .collect();
            messages.insert(full.clone(), Msg { name: full, fields });
        }
        let services: Vec<(String, Vec<Rpc>)> = set
            .file
            .iter()
            .filter(|f| f.package() == "berth.v1")
            .flat_map(|f| &f.service)
            // The agent link is not the CLI's.
            .filter(|s| s.name() != "Agent")
            // ExecuteCommand's stream is `ecs execute-command`'s own (cli::exec).
            .filter(|s| s.name() != "ExecuteCommand")
            .map(|s| {
                let rpcs = s
                    .method
                    .iter()
                    .map(|m| Rpc {
                        name: m.name().to_string(),
                        input: m.input_type().to_string(),
                        output: m.output_type().to_string(),
                    })
                    .collect();
                (s.name().to_string(), rpcs)
            })
            .collect();
        let ecs = services
            .iter()
            .find(|(n, _)| n == "Ecs")
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        Ok(Model {
            messages,
            ecs,
            services,
        })
    }

    /// A message by full name (`.berth.v1.Task`).
    pub fn message(&self, full: &str) -> Option<&Msg> {
        self.messages.get(full)
    }

    /// The rpc named `api` (`RunTask`, `CreateActivation`) of any service the CLI serves.
    pub fn rpc(&self, api: &str) -> Option<&Rpc> {
        self.services
            .iter()
            .flat_map(|(_, rpcs)| rpcs)
            .find(|r| r.name == api)
    }
}

/// The contract's model, read once.
pub fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        // The descriptor set is written by proto/build.rs from the same .proto files the types
        // come from; failing to read it is a build defect, caught by every test.
        Model::from_descriptor_set(berth_proto::FILE_DESCRIPTOR_SET).unwrap_or_else(|e| {
            panic!("berth_proto::FILE_DESCRIPTOR_SET is not a descriptor set: {e}")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_knows_fields_lists_maps_and_json_names() {
        let m = model();
        let run = m.message(".berth.v1.RunTaskRequest").unwrap();
        let count = run.field("count").unwrap();
        assert_eq!((count.kind.clone(), count.list), (Kind::Int, false));
        let tags = run.field("tags").unwrap();
        assert_eq!(tags.kind, Kind::Message(".berth.v1.Tag".into()));
        assert!(tags.list);
        let start = m.message(".berth.v1.StartTaskRequest").unwrap();
        let managed = start.field("enableECSManagedTags").unwrap();
        assert_eq!(managed.flag(), "enable-ecs-managed-tags");
        assert_eq!(managed.kind, Kind::Bool);
        let cd = m.message(".berth.v1.ContainerDefinition").unwrap();
        assert_eq!(
            cd.field("dockerLabels").unwrap().kind,
            Kind::Map(Box::new(Kind::Str))
        );
        assert!(!cd.field("dockerLabels").unwrap().list);
        let td = m.message(".berth.v1.TaskDefinition").unwrap();
        assert_eq!(td.field("registeredAt").unwrap().kind, Kind::Timestamp);
        assert_eq!(m.rpc("RunTask").unwrap().input, ".berth.v1.RunTaskRequest");
    }
}
