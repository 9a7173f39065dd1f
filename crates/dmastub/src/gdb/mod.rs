//! The gdb side: the gdbstub target over an [`crate::mmu::AddressSpace`], the `monitor`
//! commands, and the TCP server that lets one gdb after another attach.

pub mod arch;
pub mod conn;
pub mod monitor;
pub mod osdata;
mod reply;
pub mod server;
pub mod session;
pub mod target;

pub use server::{Server, bind};
pub use target::DmaTarget;
