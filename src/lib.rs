//! modelarts-proxy: a localhost reverse proxy that adds Huawei Cloud
//! credentials (AK/SK signatures, IAM tokens, API keys) to every request
//! bound for a ModelArts real-time service behind API Gateway.
#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod cli;
pub mod client;
pub mod config;
pub mod credentials;
pub mod dev;
pub mod error;
pub mod metrics;
pub mod proxy;
pub mod route;
pub mod secret;
pub mod server;
pub mod signer;
