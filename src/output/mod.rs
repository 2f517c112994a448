//! What users read: reports, exports and the formatting they share.
pub mod units;
