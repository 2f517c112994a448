//! `memspy plot`: memory over time, one line per process, with the top functions by growth
//! marked where they ran.

use std::path::PathBuf;

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct PlotOptions {
    pub output: PathBuf,
    pub input: Option<PathBuf>,
    pub pid: Option<i32>,
    /// How many functions (by memory growth) to mark on the curves.
    pub functions: usize,
}

pub fn run(_opts: &PlotOptions) -> Result<()> {
    Err(Error::Unsupported("memspy plot is being built".into()))
}
