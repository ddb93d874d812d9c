//! Generates the tonic/prost code and, with pbjson, the serde JSON mapping of every message,
//! so the ECS JSON shapes (camelCase keys) come from the one .proto definition.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("berth_descriptor.bin");
    let protos = [
        "berth/v1/ecs.proto",
        "berth/v1/agent.proto",
        "berth/v1/store.proto",
        "berth/v1/security.proto",
        "berth/v1/ec2.proto",
        "berth/v1/exec.proto",
        "berth/v1/logs.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_protos(&protos, &["."])?;
    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        // ECS's JSON shows zero counts and empty lists ("failures": []); optional fields stay
        // absent when unset.
        .emit_fields()
        .build(&[".berth"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
