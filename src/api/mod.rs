//! Transports: translate requests to engine calls and engine answers back. They never decide.
pub mod grpc;
pub mod rest;
pub mod status;
