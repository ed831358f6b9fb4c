//! Integration tests: one binary (one link), one module per feature.

mod common;

mod attempt_path;
mod auth;
mod binary;
mod client_stall;
mod endpoints;
mod errors;
mod malformed;
mod mock_provider;
mod observability;
mod openai;
mod passthrough;
mod probe_guard;
mod resilience;
mod routing;
mod sdk;
mod tool_loop;
mod tools;
mod warnings;
