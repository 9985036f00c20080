//! Compiles the gRPC APIs into Rust with tonic: `proto/cri/api.proto` (CRI runtime.v1,
//! for kubelet) and `proto/crius/v1/images.proto` (crius's own API, for its CLI).
//!
//! `protox` parses the .proto in pure Rust, so a fresh machine needs no system
//! `protoc`; the resulting descriptor set goes straight to tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["cri/api.proto", "crius/v1/images.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
