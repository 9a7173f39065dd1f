//! The gdb side: the gdbstub target over an [`crate::mmu::AddressSpace`], the `monitor`
//! commands, and the TCP server that lets one gdb after another attach.

pub mod arch;
pub mod conn;
pub mod error;
pub mod monitor;
pub mod osdata;
mod reply;
pub mod server;
pub mod session;
pub mod state;
pub mod target;

pub use error::{CommandError, FatalError, RequestError};
pub use server::{Server, bind};
pub use state::{Mode, SessionState};
pub use target::DmaTarget;
