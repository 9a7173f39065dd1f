//! The `dmastub` command line: parse, open the memory source, serve or answer.

use clap::{Args, Parser, Subcommand, ValueEnum};
use dmastub::VirtAddr;
use dmastub::gdb::monitor::parse_number;
use dmastub::gdb::{DmaTarget, Server, bind};
use dmastub::linux::btf::Btf;
use dmastub::linux::commands::Linux;
use dmastub::linux::discover::{Hints, discover};
use dmastub::linux::{profile, symfile};
use dmastub::mmu::{AddressSpace, MmuConfig, Mode, Paging};
use dmastub::phys::nettlp::wire::RequesterId;
use dmastub::phys::nettlp::{NetTlpConfig, NetTlpMem};
use dmastub::phys::{self, Format, NetTlpSetting, OpenOptions, PhysMem, Remedy, WriteMode};
use dmastub_testkit::emulator::{Emulator, EmulatorConfig};

mod demo;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const ABOUT: &str = "A GDB stub for x86-64 machines that cannot help themselves: serves a machine's \
physical memory (a live VM's RAM file, an ELF core or a raw or LiME dump; later a DMA adapter) to stock gdb, \
translating virtual addresses by walking the page tables from a CR3.";

const AFTER_HELP: &str = "\
Examples:
  dmastub serve --image post-panic.elf          # finds the kernel: KASLR, symbols, layouts
  gdb -q vmlinux -ex 'target remote :1234' -ex 'info threads' -ex 'monitor dmesg 20'
  dmastub ps --image post-panic.raw             # the same without gdb (also: dmesg, kernel)
  dmastub bt --image post-panic.raw 93          # a task's kernel backtrace, no vmlinux needed
  dmastub serve --image post-panic.elf --cr3 0x1a20000 --no-linux
  dmastub read --image post-panic.raw --phys 0x1000 64
  dmastub vtop --image post-panic.raw --cr3 0x1a20000 0x4a50f0
  dmastub demo                      # a synthetic machine and a short gdb session

Numbers take 0x… hex or decimal. Logs: RUST_LOG=info (or debug) dmastub serve …";

#[derive(Parser)]
#[command(name = "dmastub", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: CommandLine,
}

#[derive(Subcommand)]
enum CommandLine {
    /// Serve a machine's memory to gdb over TCP (`target remote HOST:PORT`).
    ///
    /// Memory packets address virtual memory through the CR3 when one is given, physical
    /// memory otherwise; `monitor phys` / `monitor virt` switch. The server is read-only
    /// unless --allow-write; it answers `continue` and `step` at once, since it cannot run the
    /// machine's CPUs.
    Serve(ServeArgs),
    /// Print memory as a hex dump (or raw bytes), without gdb.
    Read(ReadArgs),
    /// Show the page walk for a virtual address: each level's entry, the page size, the result.
    Vtop(VtopArgs),
    /// Find the kernel in the memory (no hints needed) and print what was found.
    Kernel(LinuxCmdArgs),
    /// List the tasks of the kernel in the memory (as `monitor ps`).
    Ps(PsArgs),
    /// Print the kernel log from the memory (as `monitor dmesg`).
    Dmesg(DmesgArgs),
    /// Print a task's kernel backtrace (as `monitor bt`), unwound with the kernel's own ORC
    /// tables from memory: no vmlinux needed.
    Bt(BtArgs),
    /// Write a target profile (TOML: the struct offsets dmastub uses) from BTF, for a machine
    /// whose memory may one day have to be read without it: a copy of /sys/kernel/btf/vmlinux,
    /// or the BTF in a memory image.
    Profile(ProfileArgs),
    /// The main job, end to end. With --vm: boot the distribution's Linux kernel under QEMU,
    /// serve its RAM while it runs, and show in gdb its processes, memory changing, a panic
    /// caused from outside and the panic's message and backtrace (installs QEMU if missing,
    /// after asking). Without --vm: a small synthetic machine built in memory (no QEMU, no
    /// root), with no gdb installed just served.
    Demo(DemoArgs),
    /// Play a NetTLP adapter and the root complex behind it over a memory image: answer the DMA
    /// reads libtlp or `serve --nettlp` send (UDP ports 0x3000-0x300f) from the image, for tests
    /// and demos without the hardware. Faults can be injected to exercise a client.
    NettlpEmulator(NettlpEmulatorArgs),
}

/// Where the physical memory comes from.
#[derive(Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(false)))]
struct SourceArgs {
    /// A memory dump: raw image (file offset = physical address), ELF core (QEMU
    /// dump-guest-memory, kdump vmcore) or LiME; the format is told from the first bytes.
    #[arg(long, value_name = "FILE", group = "source")]
    image: Option<PathBuf>,
    /// A live VM's RAM file (QEMU memory-backend-file,share=on, e.g. under /dev/shm): raw
    /// layout, changing while we read, so nothing read is kept across a gdb stop.
    #[arg(long, value_name = "FILE", group = "source")]
    live: Option<PathBuf>,
    /// Read --image as this format instead of detecting it.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// A machine read by DMA through the NetTLP adapter at this IPv4 address (PCIe reads in
    /// UDP; ports 0x3000 + tag).
    #[arg(long, value_name = "ADAPTER_IP", group = "source")]
    nettlp: Option<Ipv4Addr>,
    #[command(flatten)]
    nettlp_options: NetTlpArgs,
}

/// How to talk to a NetTLP adapter.
#[derive(Args)]
#[group(skip)]
struct NetTlpArgs {
    /// Our IPv4 address on the link to the adapter (where it sends completions).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1", requires = "nettlp")]
    nettlp_local: Ipv4Addr,
    /// The PCIe requester ID the adapter has on the target, bus:devfn in hex.
    #[arg(long, value_name = "BB:DD", default_value = "1b:00", value_parser = RequesterId::parse, requires = "nettlp")]
    requester: RequesterId,
    /// Reads in flight at once (one PCIe tag, and one UDP port, each).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=16), requires = "nettlp")]
    tags: u8,
    /// Max read request size in bytes (a power of two, 128 to 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 512, requires = "nettlp")]
    mrrs: u32,
    /// Milliseconds a request waits for its completions before it is sent again, until round
    /// trips are measured; then the wait adapts to them (at least 5 ms) and doubles with each
    /// try, up to 4 s (or this, when longer).
    #[arg(long, value_name = "MS", default_value_t = 500, requires = "nettlp")]
    timeout: u64,
    /// Times a request is sent again before the read fails (at most 30).
    #[arg(long, value_name = "N", default_value_t = 6, requires = "nettlp")]
    retries: u32,
    /// Give up on every DMA read this many seconds after start, with an error that says how
    /// far it got (an overall deadline for a command on a slow or lossy link; default: none).
    #[arg(long, value_name = "SECS", requires = "nettlp")]
    deadline: Option<f64>,
    /// Send tags 0-15 only, as libtlp does, for an adapter that does not pass the tag's high
    /// bits through (by default they carry a generation, so a late completion is never taken
    /// for the next request on its tag).
    #[arg(long, requires = "nettlp")]
    plain_tags: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Raw,
    Elf,
    Lime,
}

/// How virtual addresses are translated.
#[derive(Args)]
struct MmuArgs {
    /// Paging depth of the target: 4-level (48-bit) or 5-level (57-bit, LA57).
    #[arg(long, default_value = "4", value_parser = ["4", "5"])]
    paging: String,
    /// The target's physical-address width (MAXPHYADDR): higher bits in page-table entries are
    /// not address bits (e.g. AMD SME's encryption bit).
    #[arg(long, default_value_t = 52, value_parser = clap::value_parser!(u8).range(32..=52))]
    phys_bits: u8,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The page-table root to translate through (a CR3 value; PCID and flag bits are ignored).
    #[arg(long, value_name = "ADDR", value_parser = parse_number)]
    cr3: Option<u64>,
    /// Address to listen on for gdb. The protocol has no authentication: keep it on loopback
    /// and reach it through an ssh tunnel (ssh -L 1234:127.0.0.1:1234 HOST).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1234")]
    listen: String,
    /// A client that connects while another is attached takes over once the other has sent
    /// nothing for this many seconds (at once if it never sent anything); before that it is
    /// told why it cannot attach.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    takeover_after: u64,
    #[command(flatten)]
    mmu: MmuArgs,
    #[command(flatten)]
    linux: LinuxArgs,
    /// Let gdb write memory. A live RAM file is then written for real; a dump file is still
    /// opened read-only (writes stay in this process) unless --write-image is also given.
    #[arg(long)]
    allow_write: bool,
    /// With --allow-write: write changes into the dump file itself.
    #[arg(long, requires = "allow_write")]
    write_image: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("space").required(true).args(["phys", "cr3"])))]
struct ReadArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// ADDR is a physical address.
    #[arg(long)]
    phys: bool,
    /// ADDR is virtual, translated through this CR3.
    #[arg(long, value_name = "CR3", value_parser = parse_number)]
    cr3: Option<u64>,
    #[command(flatten)]
    mmu: MmuArgs,
    /// Write the raw bytes to standard output instead of a hex dump.
    #[arg(long)]
    binary: bool,
    /// Start address.
    #[arg(value_parser = parse_number)]
    addr: u64,
    /// Number of bytes.
    #[arg(value_parser = parse_number)]
    len: u64,
}

#[derive(Args)]
struct VtopArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The page-table root (CR3 value).
    #[arg(long, value_name = "CR3", value_parser = parse_number)]
    cr3: u64,
    #[command(flatten)]
    mmu: MmuArgs,
    /// The virtual address.
    #[arg(value_parser = parse_number)]
    addr: u64,
}

/// Hints for finding the kernel; each replaces what would be found in memory.
#[derive(Args, Default)]
struct LinuxArgs {
    /// The KASLR slide (KERNELOFFSET), e.g. from the panic's "Kernel Offset" line.
    #[arg(long, value_name = "SLIDE", value_parser = parse_number)]
    kaslr: Option<u64>,
    /// Kernel symbols from this System.map instead of the kallsyms tables in memory.
    #[arg(long, value_name = "FILE", conflicts_with = "vmlinux")]
    system_map: Option<PathBuf>,
    /// Kernel symbols from this vmlinux's symbol table.
    #[arg(long, value_name = "FILE")]
    vmlinux: Option<PathBuf>,
    /// Struct layouts from this BTF file (a copy of /sys/kernel/btf/vmlinux) instead of memory.
    #[arg(long, value_name = "FILE", conflicts_with = "profile")]
    btf: Option<PathBuf>,
    /// Struct layouts (and symbols it pins) from a target profile: a name from targets/ or a
    /// TOML file. `dmastub profile` writes one.
    #[arg(long, value_name = "NAME|FILE")]
    profile: Option<String>,
    /// Do not look for a Linux kernel: serve plain memory.
    #[arg(long, conflicts_with_all = ["kaslr", "system_map", "vmlinux", "btf", "profile"])]
    no_linux: bool,
}

#[derive(Args)]
struct LinuxCmdArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    mmu: MmuArgs,
    /// The kernel's page-table root, if discovery cannot find it.
    #[arg(long, value_name = "ADDR", value_parser = parse_number)]
    cr3: Option<u64>,
    #[command(flatten)]
    linux: LinuxArgs,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("from").required(true).args(["btf", "image"])))]
struct ProfileArgs {
    /// A BTF file: `cp /sys/kernel/btf/vmlinux FILE` on the machine.
    #[arg(long, value_name = "FILE")]
    btf: Option<PathBuf>,
    /// A memory image whose kernel has BTF.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// The profile's name (what --profile NAME finds once it is in targets/).
    #[arg(long)]
    name: String,
    /// The kernel release (`uname -r`); found in the image when one is given.
    #[arg(long)]
    release: Option<String>,
    /// Where to write it (default: standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct PsArgs {
    #[command(flatten)]
    common: LinuxCmdArgs,
    /// Also list the threads of multi-threaded processes.
    #[arg(short = 't', long)]
    threads: bool,
}

#[derive(Args)]
struct DmesgArgs {
    #[command(flatten)]
    common: LinuxCmdArgs,
    /// Only the last N lines.
    #[arg(short = 'n', long, value_name = "N")]
    lines: Option<usize>,
}

#[derive(Args)]
struct BtArgs {
    #[command(flatten)]
    common: LinuxCmdArgs,
    /// The task (a thread's own id for a thread of a multi-threaded process). Default: the task
    /// that panicked, else the first thread `info threads` lists.
    #[arg(value_parser = parse_number)]
    pid: Option<u64>,
}

#[derive(Args)]
struct DemoArgs {
    /// Boot a real Linux kernel under QEMU (TCG, or KVM where it works) and demonstrate on it.
    #[arg(long)]
    vm: bool,
    /// With --vm: read the guest through `nettlp-emulator` and `serve --nettlp`, as a real
    /// NetTLP adapter would be read, instead of serving its RAM file directly.
    #[arg(long, requires = "vm")]
    nettlp: bool,
    /// With --vm: install missing Debian/Ubuntu packages without asking (CI=true does the same).
    #[arg(long, short = 'y', requires = "vm")]
    yes: bool,
    /// With --vm: boot this x86-64 bzImage instead of the distribution's kernel package.
    #[arg(long, value_name = "FILE", requires = "vm")]
    kernel: Option<PathBuf>,
    /// With --vm: use this static busybox instead of the busybox-static package's.
    #[arg(long, value_name = "FILE", requires = "vm")]
    busybox: Option<PathBuf>,
    /// With --vm: the kernel's vmlinux with DWARF, for gdb's own backtrace with source lines.
    #[arg(long, value_name = "FILE", requires = "vm")]
    vmlinux: Option<PathBuf>,
    /// With --vm: how the kernel is panicked: an NMI from QEMU's monitor, as a BMC's NMI button
    /// sends one (the guest sets kernel.unknown_nmi_panic), or `echo c > /proc/sysrq-trigger`
    /// from a guest process (a panic in process context).
    #[arg(long, value_enum, default_value = "nmi", requires = "vm")]
    panic: DemoPanic,
    /// With --vm: where the kernel, busybox and built guest files are kept
    /// (default: $DMASTUB_VM_CACHE, else ~/.cache/dmastub/vm).
    #[arg(long, value_name = "DIR", requires = "vm")]
    cache: Option<PathBuf>,
    /// Address to serve the synthetic machine on (port 0: any free port).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    listen: String,
    /// Only serve; do not run gdb.
    #[arg(long)]
    no_gdb: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DemoPanic {
    Nmi,
    Sysrq,
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        CommandLine::Serve(a) => serve(a),
        CommandLine::Read(a) => read(a),
        CommandLine::Vtop(a) => vtop(a),
        CommandLine::Kernel(a) => kernel(a),
        CommandLine::Ps(a) => ps(a),
        CommandLine::Dmesg(a) => dmesg(a),
        CommandLine::Bt(a) => bt(a),
        CommandLine::Profile(a) => write_profile(a),
        CommandLine::Demo(a) if a.vm => demo::vm::run(&demo::vm::VmDemoOptions {
            nettlp: a.nettlp,
            yes: a.yes,
            guest: dmastub_testkit::vm::GuestOptions {
                kernel: a.kernel,
                busybox: a.busybox,
                cache: a.cache.unwrap_or_else(dmastub_testkit::vm::guest::default_cache_dir),
            },
            vmlinux: a.vmlinux,
            panic: match a.panic {
                DemoPanic::Nmi => demo::vm::PanicBy::Nmi,
                DemoPanic::Sysrq => demo::vm::PanicBy::Sysrq,
            },
        }),
        CommandLine::Demo(a) => demo::synthetic::run(&a.listen, !a.no_gdb).map_err(Into::into),
        CommandLine::NettlpEmulator(a) => nettlp_emulator(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmastub: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_source(src: &SourceArgs, write: WriteMode) -> Result<Box<dyn PhysMem>, Box<dyn std::error::Error>> {
    if let Some(adapter) = src.nettlp {
        let n = &src.nettlp_options;
        let config = NetTlpConfig {
            adapter,
            local: n.nettlp_local,
            requester: n.requester,
            tags: n.tags,
            mrrs: n.mrrs,
            timeout: Duration::from_millis(n.timeout),
            retries: n.retries,
            allow_write: write != WriteMode::ReadOnly,
            tag_generations: !n.plain_tags,
            deadline: match n.deadline {
                Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d.min(1e9))),
                Some(d) => return Err(format!("--deadline {d}: a number of seconds above 0").into()),
                None => None,
            },
        };
        let mem = NetTlpMem::connect(config).map_err(|e| {
            let remedy = e.remedy();
            with_remedy(e, remedy)
        })?;
        return Ok(Box::new(mem));
    }
    let (path, live) = match (&src.image, &src.live) {
        (Some(p), _) => (p, false),
        (None, Some(p)) => (p, true),
        (None, None) => {
            return Err("give a memory source: --image FILE, --live FILE or --nettlp ADAPTER_IP".into());
        }
    };
    let format = src.format.map(|f| match f {
        FormatArg::Raw => Format::Raw,
        FormatArg::Elf => Format::Elf,
        FormatArg::Lime => Format::Lime,
    });
    phys::open_file(path, &OpenOptions { live, write, format }).map_err(|e| {
        let remedy = e.remedy();
        with_remedy(e, remedy)
    })
}

/// The library's error, with what it says to change put as this command line's flags.
fn with_remedy(e: impl std::error::Error + 'static, remedy: Option<Remedy>) -> Box<dyn std::error::Error> {
    let hint = match remedy {
        Some(Remedy::AllowWrite) => "start the server with --allow-write to change memory",
        Some(Remedy::ForceRawFormat) => "pass --format raw to read it anyway",
        Some(Remedy::NetTlp(NetTlpSetting::Local)) => "--nettlp-local must be an address of this machine",
        Some(Remedy::NetTlp(NetTlpSetting::Tags)) => "see --tags",
        Some(Remedy::NetTlp(NetTlpSetting::Mrrs)) => "see --mrrs",
        Some(Remedy::NetTlp(NetTlpSetting::Timeout)) => "see --timeout",
        Some(Remedy::NetTlp(NetTlpSetting::Retries)) => "see --retries",
        Some(Remedy::NetTlp(NetTlpSetting::Deadline)) => "see --deadline",
        _ => return Box::new(e),
    };
    format!("{e}; {hint}").into()
}

fn mmu_config(m: &MmuArgs) -> MmuConfig {
    let paging = if m.paging == "5" { Paging::Level5 } else { Paging::Level4 };
    MmuConfig { paging, phys_bits: m.phys_bits }
}

fn serve(a: ServeArgs) -> CliResult {
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
    if let Some(cr3) = a.cr3 {
        space.set_cr3(cr3);
        space.set_mode(Mode::Virt)?;
    }
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
        println!("dmastub: {}", l.kernel.summary());
    }
    let mode = match linux.as_ref().map(|l| l.kernel.cr3.value).or(a.cr3) {
        Some(cr3) => format!("virtual addresses through CR3 {cr3:#x}"),
        None => "physical addresses (no CR3 given: 'monitor set-cr3 ADDR' then 'monitor virt')".to_string(),
    };
    println!("dmastub: serving {name} ({description}) on {}, {access}", server.local_addr()?);
    println!("dmastub: memory packets address {mode}");
    std::io::stdout().flush()?;
    let mut target = DmaTarget::new(space, a.allow_write, "--cr3");
    if let Some(l) = linux {
        target = target.with_linux(l);
    }
    server.serve_forever(&mut target)?;
    Ok(())
}

fn read(a: ReadArgs) -> CliResult {
    let mem = open_source(&a.source, WriteMode::ReadOnly)?;
    let mut space = AddressSpace::new(mem, mmu_config(&a.mmu));
    if let Some(cr3) = a.cr3 {
        space.set_cr3(cr3);
        space.set_mode(Mode::Virt)?;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    while done < a.len {
        let n = (a.len - done).min(buf.len() as u64) as usize;
        let addr = a.addr.wrapping_add(done);
        let chunk = &mut buf[..n];
        let got = match space.read(addr, chunk) {
            Ok(got) => got,
            Err(e) => {
                out.flush()?;
                return Err(e.into());
            }
        };
        if a.binary {
            out.write_all(&chunk[..got])?;
        } else {
            hexdump(&mut out, addr, &chunk[..got])?;
        }
        done += got as u64;
        if got < n {
            out.flush()?;
            let addr = a.addr.wrapping_add(done);
            let why = space.read(addr, &mut [0u8; 1]).err().map(|e| e.to_string()).unwrap_or_default();
            return Err(format!("stopped after {done:#x} bytes: {why}").into());
        }
    }
    out.flush()?;
    Ok(())
}

/// `addr: 16 hex bytes  |ascii|`, 16 bytes a line, lines aligned to 16.
fn hexdump(out: &mut impl Write, start: u64, bytes: &[u8]) -> std::io::Result<()> {
    let mut at = 0usize;
    while at < bytes.len() {
        let addr = start.wrapping_add(at as u64);
        let lead = (addr % 16) as usize;
        let take = (16 - lead).min(bytes.len() - at);
        let line = &bytes[at..at + take];
        let mut hex = String::with_capacity(48);
        let mut text = String::with_capacity(16);
        for i in 0..16 {
            if i >= lead && i < lead + take {
                let b = line[i - lead];
                hex.push_str(&format!("{b:02x} "));
                text.push(if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' });
            } else {
                hex.push_str("   ");
                text.push(' ');
            }
            if i == 7 {
                hex.push(' ');
            }
        }
        writeln!(out, "{:016x}: {hex} |{text}|", addr - lead as u64)?;
        at += take;
    }
    Ok(())
}

fn vtop(a: VtopArgs) -> CliResult {
    let mem = open_source(&a.source, WriteMode::ReadOnly)?;
    let mut space = AddressSpace::new(mem, mmu_config(&a.mmu));
    space.set_cr3(a.cr3);
    let walk = space.vtop(VirtAddr(a.addr));
    println!("{walk}");
    if walk.result.is_err() {
        return Err(format!("virt {:#x} does not translate under CR3 {:#x}", a.addr, a.cr3).into());
    }
    Ok(())
}

/// Finds the kernel with the user's hints.
fn find_linux(
    space: &mut AddressSpace,
    cr3: Option<u64>,
    a: &LinuxArgs,
) -> Result<Linux, Box<dyn std::error::Error>> {
    let mut hints = Hints { cr3, kaslr: a.kaslr, ..Default::default() };
    if let Some(p) = &a.system_map {
        hints.link_symbols = Some((symfile::load_system_map(p)?, format!("System.map {}", p.display())));
    }
    if let Some(p) = &a.vmlinux {
        hints.link_symbols = Some((symfile::load_vmlinux(p)?, format!("vmlinux {}", p.display())));
    }
    if let Some(p) = &a.btf {
        hints.types = Some(Box::new(Btf::load(p)?));
    }
    if let Some(name) = &a.profile {
        let prof = profile::Profile::load(name)?;
        if hints.link_symbols.is_none() {
            hints.link_symbols = prof.link_symbols();
        }
        hints.types = Some(Box::new(prof.types()));
    }
    let kernel = discover(space, hints)?;
    Ok(Linux::new(kernel))
}

fn open_linux(a: &LinuxCmdArgs) -> Result<(AddressSpace, Linux), Box<dyn std::error::Error>> {
    let mem = open_source(&a.source, WriteMode::ReadOnly)?;
    let mut space = AddressSpace::new(mem, mmu_config(&a.mmu));
    let linux = find_linux(&mut space, a.cr3, &a.linux)?;
    Ok((space, linux))
}

fn kernel(a: LinuxCmdArgs) -> CliResult {
    let (_, linux) = open_linux(&a)?;
    print!("{}", linux.kernel.report());
    Ok(())
}

fn ps(a: PsArgs) -> CliResult {
    let (mut space, linux) = open_linux(&a.common)?;
    print!("{}", linux.ps(&mut space, a.threads)?);
    Ok(())
}

fn dmesg(a: DmesgArgs) -> CliResult {
    let (mut space, linux) = open_linux(&a.common)?;
    print!("{}", linux.dmesg(&mut space, a.lines)?);
    Ok(())
}

fn bt(a: BtArgs) -> CliResult {
    let (mut space, linux) = open_linux(&a.common)?;
    print!("{}", linux.bt(&mut space, a.pid)?);
    Ok(())
}

fn write_profile(a: ProfileArgs) -> CliResult {
    let prof = match (&a.btf, &a.image) {
        (Some(p), _) => profile::Profile::from_types(&a.name, a.release.as_deref(), &Btf::load(p)?),
        (None, Some(image)) => {
            let mem = phys::open_file(image, &OpenOptions::default()).map_err(|e| {
                let remedy = e.remedy();
                with_remedy(e, remedy)
            })?;
            let mut space = AddressSpace::new(mem, MmuConfig::new(Paging::Level4));
            let kernel = discover(&mut space, Hints::default())?;
            let types =
                kernel.types.as_deref().ok_or("the image's kernel has no BTF to write a profile from")?;
            let release = a.release.clone().or(kernel.release.as_ref().map(|r| r.value.clone()));
            profile::Profile::from_types(&a.name, release.as_deref(), types)
        }
        (None, None) => return Err("give --btf FILE or --image FILE".into()),
    };
    match &a.output {
        Some(path) => std::fs::write(path, prof.to_toml())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        None => print!("{}", prof.to_toml()),
    }
    Ok(())
}

#[derive(Args)]
struct NettlpEmulatorArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The adapter's IP address: its 16 UDP ports are bound there.
    #[arg(long, value_name = "IP", default_value = "127.0.0.2")]
    listen: Ipv4Addr,
    /// Place the image's RAM at physical address + ADDR (e.g. 0x100000000 to test above 4 GiB).
    #[arg(long, value_name = "ADDR", value_parser = parse_number, default_value = "0")]
    base: u64,
    /// Max payload size: the most bytes one completion carries (128 to 4096, a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    mps: u32,
    /// Read completion boundary: completions split at multiples of it (64 or 128).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    rcb: u32,
    /// The completer ID written into completions (bus:devfn in hex).
    #[arg(long, value_name = "BB:DD", value_parser = RequesterId::parse, default_value = "00:00")]
    completer: RequesterId,
    /// Fault injection: drop each completion with probability P.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    drop_rate: f64,
    /// Fault injection: send each completion N microseconds late (requests are still served
    /// as they come).
    #[arg(long, value_name = "N", default_value_t = 0)]
    delay_us: u64,
    /// Fault injection: shuffle the completions of a request, and of requests that arrive
    /// together.
    #[arg(long)]
    reorder: bool,
    /// Fault injection: send each completion twice with probability P.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    duplicate: f64,
    /// Seed of the fault injection's random numbers (the same seed, the same faults).
    #[arg(long, value_name = "N", value_parser = parse_number, default_value = "1")]
    seed: u64,
    /// Apply DMA writes. They change what later reads see, never the file.
    #[arg(long)]
    allow_write: bool,
}

fn nettlp_emulator(a: NettlpEmulatorArgs) -> CliResult {
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
