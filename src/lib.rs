//! modelarts-proxy: a localhost reverse proxy that adds Huawei Cloud
//! credentials (AK/SK signatures, IAM tokens, API keys) to every request
//! bound for a ModelArts real-time service behind API Gateway.
//!
//! Modules from the bottom up: `headers`, `clock`, `secret` and `error`
//! depend on nothing of the crate; `signer` is a pure function; `config`
//! turns TOML into typed settings; `client`, `route` and `body` serve the
//! request path; `auth` keeps credentials current and injects them;
//! `state` is what a reload swaps; `proxy` is the request path; `server`
//! owns listeners and connections; `cli` the commands; `dev` the stand-ins.
#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod budget;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod dev;
pub mod error;
pub mod gateway;
pub mod headers;
pub mod logfmt;
pub mod metrics;
pub mod proxy;
pub mod request_id;
pub mod route;
pub mod secret;
pub mod server;
pub mod signer;
pub mod state;
pub mod telemetry;
pub mod traffic;
pub mod usage;
pub mod worker;
