//! memspy: profile time and memory of running Python programs from the outside.
pub mod python;
