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

/// Hash maps and sets of the sampler's hot path, keyed by the target's addresses and the
/// recording's ids: foldhash is several times faster than the standard SipHash on such small
/// keys, and is seeded per run, so a target cannot pick addresses that collide.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
