//! Integration tests: one binary (one link), one module per feature.

mod common;

mod auth;
mod errors;
mod mock_provider;
mod passthrough;
mod resilience;
mod routing;
mod tools;
