//! `dmastub nettlp-emulator`: the test kit's NetTLP adapter emulator over a memory source.

use crate::CliResult;
use crate::cli::NettlpEmulatorArgs;
use crate::source::open_source;
use dmastub::phys::WriteMode;
use dmastub_testkit::emulator::{Emulator, EmulatorConfig};
use std::io::Write;
use std::time::Duration;

pub(crate) fn nettlp_emulator(a: NettlpEmulatorArgs) -> CliResult {
    let config = EmulatorConfig {
        listen: a.listen,
        base: a.base,
        mps: a.mps,
        rcb: a.rcb,
        completer: a.completer,
        drop_rate: a.drop_rate,
        delay: Duration::from_micros(a.delay_us),
        reorder: a.reorder,
        duplicate_rate: a.duplicate,
        seed: a.seed,
        allow_write: a.allow_write,
    };
    config.validate()?;
    let write = if a.allow_write { WriteMode::CopyOnWrite } else { WriteMode::ReadOnly };
    let mut emulator = Emulator::bind(open_source(&a.source, write)?, config)?;
    println!("nettlp-emulator: {}", emulator.banner());
    if !a.listen.is_loopback() {
        eprintln!(
            "nettlp-emulator: WARNING: {} is not a loopback address: anyone who can reach it reads this memory",
            a.listen
        );
    }
    std::io::stdout().flush()?;
    emulator.run_until(&std::sync::atomic::AtomicBool::new(false))?;
    Ok(())
}
