//! Finding CPython in a process and reading its interpreter state: where the interpreter is
//! ([`binary`]), which layout it has ([`layout`], [`version`]), and walking its threads and
//! frames ([`walk`]) with decoded code objects ([`code`], [`objects`], [`linetable`]).
pub mod asyncio;
pub mod binary;
pub mod code;
pub mod gc;
pub mod greenlet;
pub mod layout;
pub mod linetable;
pub mod objects;
pub mod threadnames;
pub mod units;
pub mod version;
pub mod walk;

pub use binary::{locate, BinaryCache, PythonBinary};
pub use version::Version;
pub use walk::{Frame, Snapshot, StackReader, ThreadStack, WalkError};
