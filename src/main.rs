//! The `dmastub` command: a thin shell over the `dmastub` library. It parses the command line
//! ([`cli`]), opens the memory source it names ([`source`]), and serves it to gdb ([`serve`]) or
//! answers one question without gdb ([`memory`], [`kernel`]); `demo` and `nettlp-emulator` drive
//! the test kit.

mod cli;
mod demo;
mod dump;
mod emulator;
mod gcore;
mod kernel;
mod memory;
mod serve;
mod source;

use clap::Parser;
use cli::{Cli, CommandLine, DemoPanic};
use std::process::ExitCode;

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        CommandLine::Serve(a) => serve::serve(a),
        CommandLine::Read(a) => memory::read(a),
        CommandLine::Vtop(a) => memory::vtop(a),
        CommandLine::Kernel(a) => kernel::kernel(a),
        CommandLine::Ps(a) => kernel::ps(a),
        CommandLine::Lsmod(a) => kernel::lsmod(a),
        CommandLine::Dmesg(a) => kernel::dmesg(a),
        CommandLine::Bt(a) => kernel::bt(a),
        CommandLine::Maps(a) => kernel::maps(a),
        CommandLine::Dump(a) => dump::dump(a),
        CommandLine::Gcore(a) => gcore::gcore(a),
        CommandLine::Profile(a) => kernel::write_profile(a),
        CommandLine::Demo(a) if a.vm => demo::vm::run(&demo::vm::VmDemoOptions {
            nettlp: a.nettlp,
            yes: a.yes,
            guest: dmastub_testkit::vm::GuestOptions {
                kernel: a.kernel,
                busybox: a.busybox,
                cache: a.cache.unwrap_or_else(dmastub_testkit::vm::guest::default_cache_dir),
                extra_files: Vec::new(),
            },
            vmlinux: a.vmlinux,
            panic: match a.panic {
                DemoPanic::Nmi => demo::vm::PanicBy::Nmi,
                DemoPanic::Sysrq => demo::vm::PanicBy::Sysrq,
            },
        }),
        CommandLine::Demo(a) => demo::synthetic::run(&a.listen, !a.no_gdb).map_err(Into::into),
        CommandLine::NettlpEmulator(a) => emulator::nettlp_emulator(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmastub: error: {e}");
            ExitCode::FAILURE
        }
    }
}
