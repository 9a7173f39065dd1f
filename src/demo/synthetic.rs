//! `dmastub demo` without QEMU: the synthetic machine of [`dmastub::testing`] served on TCP,
//! with a short gdb session against it.

use dmastub::gdb::{DmaTarget, Server, bind};
use dmastub::mmu::{AddressSpace, MmuConfig, Paging};
use dmastub::phys::BufferMem;
use dmastub::testing::{RAM_BYTES, SyntheticFacts, synthetic_machine};
use std::io::{self, Write};
use std::process::Command;

/// The gdb commands the demo runs, each with a line that says what it shows.
fn demo_commands(f: &SyntheticFacts) -> Vec<(String, &'static str)> {
    vec![
        ("monitor cr3".into(), "the page-table root the stub translates through"),
        (format!("x/s {:#x}", f.greeting_virt), "a string in the process's data page (virtual address)"),
        (format!("x/gx {:#x}", f.counter_virt), "a u64 beside it"),
        (
            format!("monitor vtop {:#x}", f.counter_virt),
            "how that address translates: every level of the walk",
        ),
        (
            format!("x/gx {:#x}", f.direct_map_base + f.counter_phys),
            "the same u64 through a 2 MiB-page direct map",
        ),
        (format!("x/s {:#x}", f.banner_virt), "a banner in the top 2 GiB"),
        ("monitor phys".into(), "switch to physical addresses"),
        (format!("x/gx {:#x}", f.counter_phys), "the same u64 at its physical address"),
        ("monitor virt".into(), "back to virtual addresses"),
        (
            format!("x/gx {:#x}", f.gib_page_virt + (64 << 20)),
            "inside a 1 GiB page but past the end of RAM: an error, never zeros",
        ),
        ("x/gx 0xdead0000000".into(), "an unmapped address: an error"),
        ("continue".into(), "the machine's CPUs cannot be run: answered at once"),
    ]
}

/// Serves the synthetic machine on `listen`; with `run_gdb` and gdb installed, runs a short
/// session against it and returns, else serves until interrupted.
pub fn run(listen: &str, run_gdb: bool) -> io::Result<()> {
    let (bytes, facts) =
        synthetic_machine().map_err(|e| io::Error::other(format!("building the demo machine: {e}")))?;
    let mem = BufferMem::new("synthetic demo machine", bytes);
    let space = AddressSpace::new(Box::new(mem), MmuConfig::new(Paging::Level4));
    let mut target = DmaTarget::new(space, false).with_cr3(facts.cr3, "the synthetic machine's own");
    let listener =
        bind(listen).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
    let server = Server::new(listener);
    let addr = server.local_addr()?;
    println!("dmastub demo: serving a SYNTHETIC machine on {addr}, read-only");
    println!(
        "  (built in memory: {} MiB of RAM with real x86-64 page tables and made-up contents; not a real Linux)",
        RAM_BYTES >> 20
    );
    std::thread::spawn(move || {
        if let Err(e) = server.serve_forever(&mut target) {
            eprintln!("dmastub demo: server stopped: {e}");
        }
    });

    let attach = format!("gdb -q -ex 'target remote {addr}'");
    if !run_gdb || Command::new("gdb").arg("--version").output().is_err() {
        if run_gdb {
            println!("gdb is not installed (Debian/Ubuntu: apt-get install gdb), so no session is run.");
        }
        println!("Attach with:  {attach}");
        println!(
            "then try:     x/s {:#x}   monitor vtop {:#x}   monitor help",
            facts.greeting_virt, facts.counter_virt
        );
        println!("Ctrl-C stops the server.");
        io::stdout().flush()?;
        loop {
            std::thread::park();
        }
    }

    println!("Running: {attach}\n");
    let mut args: Vec<String> =
        ["-q", "-nx", "-batch", "-ex", "set pagination off", "-ex", "set confirm off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["-ex".into(), format!("target remote {addr}")]);
    for (cmd, why) in demo_commands(&facts) {
        args.extend(["-ex".into(), format!("echo \\n# {why}\\n(gdb) {cmd}\\n"), "-ex".into(), cmd]);
    }
    io::stdout().flush()?;
    // gdb writes to the terminal itself, so its answers and the monitor's stay in order.
    Command::new("gdb").args(&args).status()?;
    println!("\nThat was a synthetic machine. Point dmastub at a real one:");
    println!(
        "  dmastub serve --image vmcore.elf     (or --live /dev/shm/guest-ram): it finds the kernel itself"
    );
    println!("  dmastub serve --nettlp ADAPTER_IP   (a machine read by DMA through a NetTLP adapter)");
    println!("  gdb -q vmlinux -ex 'target remote 127.0.0.1:1234' -ex 'info threads' -ex 'monitor dmesg 20'");
    Ok(())
}
