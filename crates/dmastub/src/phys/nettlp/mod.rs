//! NetTLP: physical memory read by DMA through a NetTLP adapter (PCIe TLPs carried in UDP).
//!
//! [`NetTlpMem`] is the [`PhysMem`](crate::phys::PhysMem) that keeps every tag busy, set up
//! from a [`NetTlpConfig`]. [`wire`] is the packet format libtlp and the adapter speak, and
//! [`mmsg`] sends and receives UDP datagrams in batches: both are public so that the adapter
//! emulator in the test kit (`dmastub-testkit`) speaks exactly what the client does.

mod client;
mod config;
pub mod mmsg;
pub mod wire;

pub use client::NetTlpMem;
pub use config::{NetTlpConfig, NetTlpError, NetTlpStats};
