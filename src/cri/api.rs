//! Rust types for the CRI `runtime.v1` API, generated at build time by `build.rs`
//! (protox + tonic-prost-build) from `proto/cri/api.proto`.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("runtime.v1");
