//! Pure wire types and translation: no I/O, unit-tested with plain values.

pub mod accumulate;
pub mod anthropic;
pub mod bedrock;
pub mod capabilities;
pub mod cloud;
pub mod extensions;
pub mod merge;
pub mod openai;
pub mod request;
pub mod sse;
pub mod token_estimate;
pub mod translate;
pub mod validate;
