//! Compiles proto/preflight/v1 with protox (pure Rust), so no system protoc is needed.
use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/preflight/v1/common.proto",
        "proto/preflight/v1/decision.proto",
        "proto/preflight/v1/consent.proto",
        "proto/preflight/v1/dnc.proto",
        "proto/preflight/v1/attempts.proto",
        "proto/preflight/v1/events.proto",
        "proto/preflight/v1/audit.proto",
        "proto/preflight/v1/privacy.proto",
        "proto/preflight/v1/webhooks.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("preflight_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // prost's codec, with undecodable requests refused INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::api::grpc::codec::StrictCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
