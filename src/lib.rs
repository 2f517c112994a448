//! memspy: profile time and memory of running Python programs from the outside.
//!
//! The data flows through one module per stage: [`target`] (processes and their memory) ->
//! [`python`] (finding the interpreter and walking its stacks) -> sampling, recording, analysis
//! and output (see the design notes in README.md).
pub mod analysis;
pub mod commands;
pub mod error;
pub mod output;
pub mod python;
pub mod recording;
pub mod sample;
pub mod target;
