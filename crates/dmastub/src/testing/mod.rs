//! For tests and demos (feature `test-util`): real x86-64 page tables built in a byte vector, and
//! a synthetic machine made with them.

pub mod page_tables;
pub mod synthetic;

pub use page_tables::{BuildError, PageTableBuilder};
pub use synthetic::{RAM_BYTES, SyntheticFacts, synthetic_machine};
