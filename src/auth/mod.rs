//! Credentials at run time: static AK/SK, IAM tokens, ECS temporary AK/SK and
//! API keys, each behind a provider that keeps it current.

pub mod refresh;
