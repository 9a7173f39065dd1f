//! NetTLP: physical memory read by DMA through a NetTLP adapter (PCIe TLPs carried in UDP).
//!
//! [`wire`] is the packet format libtlp and the adapter speak; [`client`] is the
//! [`crate::phys::PhysMem`] that keeps every tag busy; [`emulator`] plays the adapter and the
//! target's root complex over any other memory source, for tests and demos.

mod client;
mod config;
pub mod mmsg;
pub mod wire;

pub use client::NetTlpMem;
pub use config::{NetTlpConfig, NetTlpError, NetTlpStats};
