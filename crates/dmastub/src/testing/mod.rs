//! For tests, fuzzing and demos (feature `test-util`): real x86-64 page tables built in a byte
//! vector, a synthetic machine made with them, the one fake memory and the one seeded generator.

pub mod memory;
pub mod page_tables;
pub mod rng;
pub mod synthetic;

pub use memory::FakeMemory;
pub use page_tables::{BuildError, PageTableBuilder};
pub use rng::XorShift;
pub use synthetic::{RAM_BYTES, SyntheticFacts, synthetic_machine};
