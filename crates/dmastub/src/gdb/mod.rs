//! The gdb side: the gdbstub target over an [`crate::mmu::AddressSpace`], the `monitor`
//! commands, and the TCP server that lets one gdb after another attach.
//!
//! * [`SessionState`] (`state.rs`): gdb's state, which the layers below do not have: whether
//!   memory packets address physical or virtual memory ([`Mode`]), the active CR3 and who set
//!   it, and the thread gdb selected.
//! * [`DmaTarget`] (`target.rs`, `target/`): the gdbstub target: memory through the session's
//!   address space, Linux tasks as threads, `monitor` commands, and what a machine that dmastub
//!   cannot run answers to breakpoints and resume requests.
//! * [`arch`]: the x86-64 register set gdb is shown, and gdb's register numbers ([`arch::regnum`]).
//! * `monitor.rs`: the `monitor` command language; `osdata.rs`: `info os`.
//! * [`Server`] (`server.rs`): the TCP server, one client at a time, the next one after it;
//!   [`session`] and [`conn`]: one client's session and its buffered connection; `reply.rs`:
//!   memory replies encoded in bulk.
//! * Errors, typed by what they do to the session (`error.rs`): a refused request is an error
//!   reply and the session goes on; only a [`FatalError`] would end it.

pub mod arch;
pub mod conn;
mod error;
pub(crate) mod monitor;
pub(crate) mod osdata;
mod reply;
mod server;
pub mod session;
mod state;
mod target;

pub use error::FatalError;
pub use monitor::{NumberError, parse_number};
pub use server::{DEFAULT_TAKEOVER_IDLE, Server, bind};
pub use session::PACKET_SIZE;
pub use state::{Mode, SessionState};
pub use target::DmaTarget;
