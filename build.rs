//! Compiles the protos without `protoc`: protox parses them into file descriptor sets,
//! tonic-prost-build generates the messages and services from them, and each served API's encoded set
//! is written beside them for server reflection. Three sets: prescale's own API
//! (`proto/prescale/v1`), KEDA's external scaler (`proto/externalscaler`, vendored) and the
//! Prometheus remote-write messages (`proto/prometheus`); and, client only, etcd's v3 API
//! (`proto/etcd`, vendored) for fleet mode. It also lists the committed model registry in `models/` for
//! `include_bytes!`, so `prescale demo` serves those models from any working directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let apis: [(&[&str], Option<&str>); 3] = [
        (
            &[
                "proto/prescale/v1/common.proto",
                "proto/prescale/v1/ingest.proto",
                "proto/prescale/v1/forecast.proto",
                "proto/prescale/v1/plan.proto",
                "proto/prescale/v1/events.proto",
                "proto/prescale/v1/admin.proto",
            ],
            Some("prescale_descriptor.bin"),
        ),
        (
            &["proto/externalscaler/externalscaler.proto"],
            Some("externalscaler_descriptor.bin"),
        ),
        (&["proto/prometheus/remote.proto"], None),
    ];
    for (files, descriptor_file) in apis {
        for file in files {
            println!("cargo:rerun-if-changed={file}");
        }
        let descriptors = protox::compile(files, ["proto"])?;
        if let Some(name) = descriptor_file {
            std::fs::write(
                out_dir.join(name),
                prost::Message::encode_to_vec(&descriptors),
            )?;
        }
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(descriptors)?;
    }
    compile_etcd_client()?;
    write_sample_models(&out_dir)?;
    Ok(())
}

/// The etcd v3 client (`etcdserverpb` with the `mvccpb` and `authpb` messages it uses). The
/// grpc-gateway annotations `rpc.proto` imports are parsed but not generated: nothing reads them.
fn compile_etcd_client() -> Result<(), Box<dyn std::error::Error>> {
    const GENERATED: [&str; 3] = ["etcdserverpb", "mvccpb", "authpb"];
    println!("cargo:rerun-if-changed=proto/etcd");
    let mut descriptors = protox::compile(["etcd/api/etcdserverpb/rpc.proto"], ["proto/etcd"])?;
    descriptors
        .file
        .retain(|file| GENERATED.contains(&file.package()));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}

/// Writes `sample_models.rs`: `&[(path relative to models/, bytes)]` for the manifest and every
/// model file under `models/` (the README, `.gitignore` and a writer's `.lock` or `*.tmp` are not
/// part of a registry).
fn write_sample_models(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    // A directory here makes Cargo rerun this script when anything below it changes.
    println!("cargo:rerun-if-changed=models");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "model")
                || path == root.join("manifest.json")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut code = String::from("&[\n");
    for path in files {
        let relative = path
            .strip_prefix(&root)?
            .to_string_lossy()
            .replace('\\', "/");
        writeln!(
            code,
            "    ({relative:?}, include_bytes!({:?})),",
            path.display().to_string()
        )?;
    }
    code.push_str("]\n");
    std::fs::write(out_dir.join("sample_models.rs"), code)?;
    Ok(())
}
