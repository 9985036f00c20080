//! crius — a container runtime for Kubernetes nodes, serving the CRI `runtime.v1` API.
//!
//! Module map (see `DESIGN.md` in the shared design notes and the README's architecture picture):
//!
//! - [`config`]: the daemon's TOML configuration, its embedded defaults and validation.
//! - [`daemon`]: start-up and shutdown of `criusd`: state directories, the root lock, the
//!   unix socket and the gRPC server.
//! - [`cri`]: the CRI gRPC services — generated API types, request validation, error
//!   mapping, and one file per RPC group that orchestrates the layers below.
//! - [`cli`]: the `crius` command line client's verbs.
//! - [`image`]: registries, the content store, pulls and garbage collection.
//! - [`snapshot`]: image layers unpacked into overlay-ready directories.
//! - [`store`]: crash-safe metadata records (images).
//! - [`cgroups`]: reading container cgroups (v1 and v2): usage, OOM kills.
//! - [`network`]: pod network namespaces, the built-in bridge or CNI plugins, host ports.
//! - [`runtime`]: pure: (sandbox, container config, image config) → OCI runtime spec.
//! - [`shim`]: `crius-shim` (shim v2 Task service over ttrpc) and criusd's shim manager.
//! - [`streaming`]: the HTTP/SPDY server that carries Exec and PortForward sessions,
//!   and its client.
//! - [`logging`]: the `tracing` subscriber (text or JSON).
//!
//! Dependency rule: `bin → {cli, daemon} → cri → {store, image, snapshot, shim, network,
//! cgroups, runtime, streaming}`. Nothing below `cri` imports the generated CRI types, and `image`,
//! `network` and `cgroups` never import `cri`.

pub mod cgroups;
pub mod cli;
pub mod config;
pub mod cri;
pub mod daemon;
pub mod image;
pub mod logging;
pub mod network;
pub mod runtime;
pub mod shim;
pub mod snapshot;
pub mod store;
pub mod streaming;
