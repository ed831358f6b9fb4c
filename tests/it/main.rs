//! Integration tests: one binary (one link), one module per feature.

mod common;

mod auth;
mod binary;
mod endpoints;
mod errors;
mod fuzz;
mod malformed;
mod mock_provider;
mod observability;
mod openai;
mod passthrough;
mod resilience;
mod routing;
mod sdk;
mod tool_loop;
mod tools;
