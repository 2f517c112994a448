//! Finding CPython in a process and reading its interpreter state.
pub mod linetable;
