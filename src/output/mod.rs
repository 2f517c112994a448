//! What users read: reports, exports and the formatting they share.
pub mod check;
pub mod collapsed;
pub mod flame;
pub mod json;
pub mod lines;
pub mod mprof;
pub mod plot;
pub mod pprof;
pub mod pstree;
pub mod push;
pub mod report;
pub mod serve;
pub mod speedscope;
pub mod text;
pub mod units;
