//! preflight: a contact-compliance decision service. The library holds the whole core;
//! `main.rs` is only the command line.
pub mod alloc;
pub mod api;
pub mod audit;
pub mod auth;
pub mod calling;
pub mod clock;
pub mod config;
pub mod engine;
pub mod error;
pub mod index;
pub mod keywords;
pub mod model;
pub mod normalize;
pub mod policy;
pub mod prefetch;
pub mod privacy;
pub mod registry;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod webhooks;

/// Generated from proto/preflight/v1 by build.rs.
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("preflight.v1");

    /// Encoded descriptors, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("preflight_descriptor");
}
