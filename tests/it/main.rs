//! Integration tests: one binary (one link), one module per feature.

mod common;

mod attempt_path;
mod auth;
mod bedrock;
mod binary;
mod client_stall;
mod cluster;
mod endpoints;
mod errors;
mod fuzz;
mod malformed;
mod mock_provider;
mod observability;
mod openai;
mod otlp;
mod passthrough;
mod probe_guard;
mod reload;
mod resilience;
mod routing;
mod sdk;
mod shapes;
mod tool_loop;
mod tools;
mod upstream_identity;
mod vertex;
mod warnings;
