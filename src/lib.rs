//! An Anthropic-compatible LLM gateway.
//!
//! Request flow: `api` (HTTP surface, checks that need no upstream) → `session` (one
//! `SessionActor` per request: admission, attempts, the SSE channel to the client) →
//! `providers` (one `ProviderActor` per provider per worker: upstream HTTP) — with `ratelimit`
//! (a `RateLimiterActor` per worker over shared governor state), `routing` (deployment order) and
//! `tools` (gateway server tools: declarations, history replay, one `ToolActor` per kind per worker).
//! Wire types and translation are pure code in `protocol`; `observability` turns every finished
//! request into metrics and one request-log row.

pub mod api;
pub mod cluster;
pub mod config;
pub mod error;
pub mod ids;
pub mod observability;
pub mod protocol;
pub mod providers;
pub mod ratelimit;
pub mod reload;
pub mod routing;
pub mod server;
pub mod session;
pub mod state;
pub mod strictness;
pub mod telemetry;
pub mod tools;

pub use config::Config;
pub use error::GatewayError;
pub use server::{start, Gateway};
