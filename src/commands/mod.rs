//! One module per subcommand: each turns its parsed arguments into calls to the stage modules
//! (target, python, sample, recording, analysis, output) and prints the result.
pub mod check;
pub mod diff;
pub mod dump;
pub mod export;
pub mod flame;
pub mod info;
pub mod lines;
pub mod plot;
pub mod record;
