//! Integration tests: one binary (one link), one module per feature.

mod common;

mod auth;
mod errors;
mod mock_provider;
mod openai;
mod passthrough;
