//! Compiles `proto/prescale/v1/*.proto` without `protoc`: protox parses them into a file descriptor
//! set, tonic-prost-build generates the messages and services from it, and the encoded set is written
//! beside them for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/prescale/v1/common.proto",
        "proto/prescale/v1/ingest.proto",
        "proto/prescale/v1/forecast.proto",
        "proto/prescale/v1/plan.proto",
        "proto/prescale/v1/events.proto",
        "proto/prescale/v1/admin.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("prescale_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
