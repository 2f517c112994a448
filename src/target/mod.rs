//! The target processes: reading their memory, their `/proc` files, stopping them for a
//! consistent snapshot, launching and following them.
//!
//! All `unsafe` and platform-specific code of memspy lives under this module.
pub mod family;
pub mod files;
pub mod launch;
pub mod lock;
pub mod memory;
pub mod perf;
pub mod procfs;
pub mod sched;
pub mod threads;

pub use memory::{ProcessMemory, ReadError, ReadFault, RemoteMemory};
