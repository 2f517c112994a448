//! One module per subcommand: each turns its parsed arguments into calls to the stage modules
//! (target, python, sample, recording, analysis, output) and prints the result.
pub mod dump;
pub mod info;
pub mod record;
