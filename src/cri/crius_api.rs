//! Types and service traits generated from `proto/crius/v1/images.proto`: crius's own API
//! for its CLI (pull progress, load, save), served beside the CRI.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("crius.v1");
