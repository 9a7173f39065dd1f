//! `dmastub serve`: the gdb server over a memory source.

use crate::CliResult;
use crate::cli::ServeArgs;
use crate::kernel::find_linux;
use crate::source::{mmu_config, open_source};
use dmastub::gdb::{DmaTarget, Server, bind};
use dmastub::mmu::AddressSpace;
use dmastub::phys::WriteMode;
use std::io::Write;
use std::time::Duration;

pub(crate) fn serve(a: ServeArgs) -> CliResult {
    // A live machine is written for real: no copy to keep changes in.
    let live = a.source.live.is_some() || a.source.nettlp.is_some();
    let write = match (a.allow_write, a.write_image, live) {
        (false, _, _) => WriteMode::ReadOnly,
        (true, _, true) | (true, true, _) => WriteMode::Shared,
        (true, false, false) => WriteMode::CopyOnWrite,
    };
    let mem = open_source(&a.source, write)?;
    let name = mem.name().to_string();
    let description = mem.describe();
    let mut space = AddressSpace::new(mem, mmu_config(&a.mmu));
    let linux = if a.linux.no_linux {
        None
    } else {
        match find_linux(&mut space, a.cr3, &a.linux) {
            Ok(l) => Some(l),
            Err(e) => {
                println!("dmastub: no Linux kernel found ({e}); serving plain memory");
                None
            }
        }
    };
    let listener = bind(&a.listen).map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    let server = Server::new(listener).with_takeover_idle(Duration::from_secs(a.takeover_after));
    let local = server.local_addr()?;
    if !local.ip().is_loopback() {
        println!(
            "dmastub: WARNING: listening on {local}, beyond this machine: the gdb protocol has no authentication, \
             so anyone who reaches this port reads the target's memory{}. Prefer --listen 127.0.0.1:PORT and an \
             ssh tunnel from your workstation: ssh -N -L {port}:127.0.0.1:{port} THIS-HOST",
            if a.allow_write { " and WRITES it (--allow-write)" } else { "" },
            port = local.port()
        );
    }
    let access = match write {
        WriteMode::ReadOnly => "read-only".to_string(),
        WriteMode::CopyOnWrite => {
            "writable (changes stay in this process; the file is untouched)".to_string()
        }
        WriteMode::Shared => format!("WRITABLE: gdb's writes change {name}"),
    };
    if let Some(l) = &linux {
        println!("dmastub: {}", dmastub::linux::render::kernel_summary(l.kernel(), crate::kernel::hint_flag));
    }
    let mode = match linux.as_ref().map(|l| l.kernel.cr3.value).or(a.cr3) {
        Some(cr3) => format!("virtual addresses through CR3 {cr3:#x}"),
        None => "physical addresses (no CR3 given: 'monitor set-cr3 ADDR' then 'monitor virt')".to_string(),
    };
    println!("dmastub: serving {name} ({description}) on {}, {access}", server.local_addr()?);
    println!("dmastub: memory packets address {mode}");
    std::io::stdout().flush()?;
    let mut target = DmaTarget::new(space, a.allow_write)
        .with_hint_names(crate::kernel::hint_flag)
        .with_module_files(&a.module_files);
    if let Some(cr3) = a.cr3 {
        target = target.with_cr3(cr3, "--cr3");
    }
    if let Some(l) = linux {
        target = target.with_linux(l);
    }
    server.serve_forever(&mut target)?;
    Ok(())
}
