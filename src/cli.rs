//! The command line's grammar (clap): the subcommands, their arguments and the help text.

use clap::{Args, Parser, Subcommand, ValueEnum};
use dmastub::gdb::parse_number;
use dmastub::phys::nettlp::wire::RequesterId;
use std::net::Ipv4Addr;
use std::path::PathBuf;

const ABOUT: &str = "A GDB stub for x86-64 Linux machines that cannot help themselves: serves a \
machine's physical memory (by DMA through a NetTLP adapter, from a live VM's RAM file, or from an ELF \
core, raw or LiME dump) to stock gdb, finds the kernel in it with no hints, and translates virtual \
addresses by walking the page tables from a CR3.";

const AFTER_HELP: &str = "\
Examples:
  dmastub demo --vm                             # a real Linux under QEMU, read while it runs, panicked, read again
  dmastub demo                                  # a synthetic machine and a short gdb session (no QEMU)
  dmastub serve --image post-panic.elf          # finds the kernel: KASLR, symbols, layouts
  gdb -q vmlinux -ex 'target remote :1234' -ex 'info threads' -ex 'monitor dmesg 20'
  dmastub serve --live /dev/shm/guest-ram       # a running VM's RAM file (QEMU memory-backend-file,share=on)
  dmastub serve --nettlp 192.168.10.1           # a machine read by DMA through its NetTLP adapter
  dmastub ps --image post-panic.raw             # the same without gdb (also: dmesg, kernel)
  dmastub bt --image post-panic.raw 93          # a task's kernel backtrace, no vmlinux needed
  dmastub serve --image post-panic.elf --cr3 0x1a20000 --no-linux
  dmastub dump --nettlp 192.168.10.1 -o vmcore  # a kdump-compressed vmcore (-d 31, zlib) for crash and drgn
  dmastub dump --image post-panic.raw --format elf --dump-level 0 -o vmcore.elf
  dmastub gcore --image post-panic.raw 93 -o core.93 && gdb timekeeper core.93  # a process's core
  dmastub read --image post-panic.raw --phys 0x1000 64
  dmastub vtop --image post-panic.raw --cr3 0x1a20000 0x4a50f0
  dmastub nettlp-emulator --image post-panic.raw  # play a NetTLP adapter over an image, for tests

Numbers take 0x… hex or decimal. Logs: RUST_LOG=info (or debug) dmastub serve …";

#[derive(Parser)]
#[command(name = "dmastub", version, about = ABOUT, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: CommandLine,
}

#[derive(Subcommand)]
pub(crate) enum CommandLine {
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
    /// List the loaded kernel modules (as `monitor lsmod`; --proc: as /proc/modules prints them).
    Lsmod(LsmodArgs),
    /// List the tasks of the kernel in the memory (as `monitor ps`).
    Ps(PsArgs),
    /// Print the kernel log from the memory (as `monitor dmesg`).
    Dmesg(DmesgArgs),
    /// Print a task's kernel backtrace (as `monitor bt`), unwound with the kernel's own ORC
    /// tables from memory: no vmlinux needed.
    Bt(BtArgs),
    /// Print a process's memory map as /proc/PID/maps shows it (as `monitor maps PID`): its
    /// VMAs from the kernel's maple tree (or VMA list), with files' device, inode and path.
    Maps(MapsArgs),
    /// Save the machine's memory as a vmcore that crash and drgn open: kdump-compressed (what
    /// kdump writes) or ELF, filtered like makedumpfile's -d from the kernel's own struct page
    /// array (no vmlinux needed), with VMCOREINFO and a register note per CPU. From any source,
    /// by DMA too: the way to take home a dump of a machine whose kdump never ran. Ctrl-C stops
    /// it and leaves a partial dump marked as such.
    Dump(DumpArgs),
    /// Write a process's core file, as gdb's own `gcore` writes it on the live machine: a
    /// register note per thread (user mode, from task_pt_regs), the process's info, auxiliary
    /// vector and file mappings, and every mapping's memory read through its page tables. Open
    /// it with `gdb BINARY CORE`. Memory the source cannot give is left out, never zeros.
    Gcore(GcoreArgs),
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
pub(crate) struct SourceArgs {
    /// A memory dump: raw image (file offset = physical address), ELF core (QEMU
    /// dump-guest-memory, kdump vmcore), kdump-compressed or flattened vmcore (makedumpfile,
    /// QEMU dump-guest-memory -z) or LiME; the format is told from the first bytes.
    #[arg(long, value_name = "FILE", group = "source")]
    pub(crate) image: Option<PathBuf>,
    /// A live VM's RAM file (QEMU memory-backend-file,share=on, e.g. under /dev/shm): raw
    /// layout, changing while we read, so nothing read is kept across a gdb stop.
    #[arg(long, value_name = "FILE", group = "source")]
    pub(crate) live: Option<PathBuf>,
    /// Read --image as this format instead of detecting it.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) image_format: Option<FormatArg>,
    /// A machine read by DMA through the NetTLP adapter at this IPv4 address (PCIe reads in
    /// UDP; ports 0x3000 + tag).
    #[arg(long, value_name = "ADAPTER_IP", group = "source")]
    pub(crate) nettlp: Option<Ipv4Addr>,
    #[command(flatten)]
    pub(crate) nettlp_options: NetTlpArgs,
}

/// How to talk to a NetTLP adapter.
#[derive(Args)]
#[group(skip)]
pub(crate) struct NetTlpArgs {
    /// Our IPv4 address on the link to the adapter (where it sends completions).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1", requires = "nettlp")]
    pub(crate) nettlp_local: Ipv4Addr,
    /// The PCIe requester ID the adapter has on the target, bus:devfn in hex.
    #[arg(long, value_name = "BB:DD", default_value = "1b:00", value_parser = RequesterId::parse, requires = "nettlp")]
    pub(crate) requester: RequesterId,
    /// Reads in flight at once (one PCIe tag, and one UDP port, each).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=16), requires = "nettlp")]
    pub(crate) tags: u8,
    /// Max read request size in bytes (a power of two, 128 to 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 512, requires = "nettlp")]
    pub(crate) mrrs: u32,
    /// Milliseconds a request waits for its completions before it is sent again, until round
    /// trips are measured; then the wait adapts to them (at least 5 ms) and doubles with each
    /// try, up to 4 s (or this, when longer).
    #[arg(long, value_name = "MS", default_value_t = 500, requires = "nettlp")]
    pub(crate) timeout: u64,
    /// Times a request is sent again before the read fails (at most 30).
    #[arg(long, value_name = "N", default_value_t = 6, requires = "nettlp")]
    pub(crate) retries: u32,
    /// Give up on every DMA read this many seconds after start, with an error that says how
    /// far it got (an overall deadline for a command on a slow or lossy link; default: none).
    #[arg(long, value_name = "SECS", requires = "nettlp")]
    pub(crate) deadline: Option<f64>,
    /// Send tags 0-15 only, as libtlp does, for an adapter that does not pass the tag's high
    /// bits through (by default they carry a generation, so a late completion is never taken
    /// for the next request on its tag).
    #[arg(long, requires = "nettlp")]
    pub(crate) plain_tags: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum FormatArg {
    Raw,
    Elf,
    Lime,
}

/// How virtual addresses are translated.
#[derive(Args)]
pub(crate) struct MmuArgs {
    /// Paging depth of the target: 4-level (48-bit) or 5-level (57-bit, LA57).
    #[arg(long, default_value = "4", value_parser = ["4", "5"])]
    pub(crate) paging: String,
    /// The target's physical-address width (MAXPHYADDR): higher bits in page-table entries are
    /// not address bits (e.g. AMD SME's encryption bit).
    #[arg(long, default_value_t = 52, value_parser = clap::value_parser!(u8).range(32..=52))]
    pub(crate) phys_bits: u8,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// The page-table root to translate through (a CR3 value; PCID and flag bits are ignored).
    #[arg(long, value_name = "ADDR", value_parser = parse_number)]
    pub(crate) cr3: Option<u64>,
    /// Address to listen on for gdb. The protocol has no authentication: keep it on loopback
    /// and reach it through an ssh tunnel (ssh -L 1234:127.0.0.1:1234 HOST).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1234")]
    pub(crate) listen: String,
    /// A client that connects while another is attached takes over once the other has sent
    /// nothing for this many seconds (at once if it never sent anything); before that it is
    /// told why it cannot attach.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub(crate) takeover_after: u64,
    #[command(flatten)]
    pub(crate) mmu: MmuArgs,
    #[command(flatten)]
    pub(crate) linux: LinuxArgs,
    /// Let gdb write memory. A live RAM file is then written for real; a dump file is still
    /// opened read-only (writes stay in this process) unless --write-image is also given.
    #[arg(long)]
    pub(crate) allow_write: bool,
    /// With --allow-write: write changes into the dump file itself.
    #[arg(long, requires = "allow_write")]
    pub(crate) write_image: bool,
    /// A folder holding modules' .ko files (searched recursively; repeatable), e.g. the
    /// -dbg package's usr/lib/debug/lib/modules/RELEASE: gdb's library list then gives each
    /// module's sections in its file's order, as gdb needs to load it (`set solib-search-path`).
    #[arg(long, value_name = "DIR")]
    pub(crate) module_files: Vec<PathBuf>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("space").required(true).args(["phys", "cr3"])))]
pub(crate) struct ReadArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// ADDR is a physical address.
    #[arg(long)]
    pub(crate) phys: bool,
    /// ADDR is virtual, translated through this CR3.
    #[arg(long, value_name = "CR3", value_parser = parse_number)]
    pub(crate) cr3: Option<u64>,
    #[command(flatten)]
    pub(crate) mmu: MmuArgs,
    /// Write the raw bytes to standard output instead of a hex dump.
    #[arg(long)]
    pub(crate) binary: bool,
    /// Start address.
    #[arg(value_parser = parse_number)]
    pub(crate) addr: u64,
    /// Number of bytes.
    #[arg(value_parser = parse_number)]
    pub(crate) len: u64,
}

#[derive(Args)]
pub(crate) struct VtopArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// The page-table root (CR3 value).
    #[arg(long, value_name = "CR3", value_parser = parse_number)]
    pub(crate) cr3: u64,
    #[command(flatten)]
    pub(crate) mmu: MmuArgs,
    /// The virtual address.
    #[arg(value_parser = parse_number)]
    pub(crate) addr: u64,
}

/// Hints for finding the kernel; each replaces what would be found in memory.
#[derive(Args, Default)]
pub(crate) struct LinuxArgs {
    /// The KASLR slide (KERNELOFFSET), e.g. from the panic's "Kernel Offset" line.
    #[arg(long, value_name = "SLIDE", value_parser = parse_number)]
    pub(crate) kaslr: Option<u64>,
    /// Kernel symbols from this System.map instead of the kallsyms tables in memory.
    #[arg(long, value_name = "FILE", conflicts_with = "vmlinux")]
    pub(crate) system_map: Option<PathBuf>,
    /// Kernel symbols from this vmlinux's symbol table.
    #[arg(long, value_name = "FILE")]
    pub(crate) vmlinux: Option<PathBuf>,
    /// Struct layouts from this BTF file (a copy of /sys/kernel/btf/vmlinux) instead of memory.
    #[arg(long, value_name = "FILE", conflicts_with = "profile")]
    pub(crate) btf: Option<PathBuf>,
    /// Struct layouts (and symbols it pins) from a target profile: a name from targets/ or a
    /// TOML file. `dmastub profile` writes one.
    #[arg(long, value_name = "NAME|FILE")]
    pub(crate) profile: Option<String>,
    /// Do not look for a Linux kernel: serve plain memory.
    #[arg(long, conflicts_with_all = ["kaslr", "system_map", "vmlinux", "btf", "profile"])]
    pub(crate) no_linux: bool,
}

#[derive(Args)]
pub(crate) struct LinuxCmdArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) mmu: MmuArgs,
    /// The kernel's page-table root, if discovery cannot find it.
    #[arg(long, value_name = "ADDR", value_parser = parse_number)]
    pub(crate) cr3: Option<u64>,
    #[command(flatten)]
    pub(crate) linux: LinuxArgs,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("from").required(true).args(["btf", "image"])))]
pub(crate) struct ProfileArgs {
    /// A BTF file: `cp /sys/kernel/btf/vmlinux FILE` on the machine.
    #[arg(long, value_name = "FILE")]
    pub(crate) btf: Option<PathBuf>,
    /// A memory image whose kernel has BTF.
    #[arg(long, value_name = "FILE")]
    pub(crate) image: Option<PathBuf>,
    /// The profile's name (what --profile NAME finds once it is in targets/).
    #[arg(long)]
    pub(crate) name: String,
    /// The kernel release (`uname -r`); found in the image when one is given.
    #[arg(long)]
    pub(crate) release: Option<String>,
    /// Where to write it (default: standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct PsArgs {
    #[command(flatten)]
    pub(crate) common: LinuxCmdArgs,
    /// Also list the threads of multi-threaded processes.
    #[arg(short = 't', long)]
    pub(crate) threads: bool,
}

#[derive(Args)]
pub(crate) struct LsmodArgs {
    #[command(flatten)]
    pub(crate) common: LinuxCmdArgs,
    /// Print /proc/modules' lines (`name size refcnt users state 0xbase [(taints)]`).
    #[arg(short = 'p', long = "proc")]
    pub(crate) proc: bool,
}

#[derive(Args)]
pub(crate) struct DmesgArgs {
    #[command(flatten)]
    pub(crate) common: LinuxCmdArgs,
    /// Only the last N lines.
    #[arg(short = 'n', long, value_name = "N")]
    pub(crate) lines: Option<usize>,
}

#[derive(Args)]
pub(crate) struct BtArgs {
    #[command(flatten)]
    pub(crate) common: LinuxCmdArgs,
    /// The task (a thread's own id for a thread of a multi-threaded process). Default: the task
    /// that panicked, else the first thread `info threads` lists.
    #[arg(value_parser = parse_number)]
    pub(crate) pid: Option<u64>,
    /// Every CPU's running task, through the interrupt that stopped it (as `monitor bt -a`).
    #[arg(short = 'a', long = "all", conflicts_with = "pid")]
    pub(crate) all: bool,
}

#[derive(Args)]
pub(crate) struct MapsArgs {
    #[command(flatten)]
    pub(crate) common: LinuxCmdArgs,
    /// The process (or one of its threads).
    #[arg(value_parser = parse_number)]
    pub(crate) pid: u64,
}

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Boot a real Linux kernel under QEMU (TCG, or KVM where it works) and demonstrate on it.
    #[arg(long)]
    pub(crate) vm: bool,
    /// With --vm: read the guest through `nettlp-emulator` and `serve --nettlp`, as a real
    /// NetTLP adapter would be read, instead of serving its RAM file directly.
    #[arg(long, requires = "vm")]
    pub(crate) nettlp: bool,
    /// With --vm: install missing Debian/Ubuntu packages without asking (CI=true does the same).
    #[arg(long, short = 'y', requires = "vm")]
    pub(crate) yes: bool,
    /// With --vm: boot this x86-64 bzImage instead of the distribution's kernel package.
    #[arg(long, value_name = "FILE", requires = "vm")]
    pub(crate) kernel: Option<PathBuf>,
    /// With --vm: use this static busybox instead of the busybox-static package's.
    #[arg(long, value_name = "FILE", requires = "vm")]
    pub(crate) busybox: Option<PathBuf>,
    /// With --vm: the kernel's vmlinux with DWARF, for gdb's own backtrace with source lines.
    #[arg(long, value_name = "FILE", requires = "vm")]
    pub(crate) vmlinux: Option<PathBuf>,
    /// With --vm: how the kernel is panicked: an NMI from QEMU's monitor, as a BMC's NMI button
    /// sends one (the guest sets kernel.unknown_nmi_panic), or `echo c > /proc/sysrq-trigger`
    /// from a guest process (a panic in process context).
    #[arg(long, value_enum, default_value = "nmi", requires = "vm")]
    pub(crate) panic: DemoPanic,
    /// With --vm: where the kernel, busybox and built guest files are kept
    /// (default: $DMASTUB_VM_CACHE, else ~/.cache/dmastub/vm).
    #[arg(long, value_name = "DIR", requires = "vm")]
    pub(crate) cache: Option<PathBuf>,
    /// Address to serve the synthetic machine on (port 0: any free port).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    pub(crate) listen: String,
    /// Only serve; do not run gdb.
    #[arg(long)]
    pub(crate) no_gdb: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum DemoPanic {
    Nmi,
    Sysrq,
}

#[derive(Args)]
pub(crate) struct NettlpEmulatorArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// The adapter's IP address: its 16 UDP ports are bound there.
    #[arg(long, value_name = "IP", default_value = "127.0.0.2")]
    pub(crate) listen: Ipv4Addr,
    /// Place the image's RAM at physical address + ADDR (e.g. 0x100000000 to test above 4 GiB).
    #[arg(long, value_name = "ADDR", value_parser = parse_number, default_value = "0")]
    pub(crate) base: u64,
    /// Max payload size: the most bytes one completion carries (128 to 4096, a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub(crate) mps: u32,
    /// Read completion boundary: completions split at multiples of it (64 or 128).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub(crate) rcb: u32,
    /// The completer ID written into completions (bus:devfn in hex).
    #[arg(long, value_name = "BB:DD", value_parser = RequesterId::parse, default_value = "00:00")]
    pub(crate) completer: RequesterId,
    /// Fault injection: drop each completion with probability P.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub(crate) drop_rate: f64,
    /// Fault injection: send each completion N microseconds late (requests are still served
    /// as they come).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) delay_us: u64,
    /// Fault injection: shuffle the completions of a request, and of requests that arrive
    /// together.
    #[arg(long)]
    pub(crate) reorder: bool,
    /// Fault injection: send each completion twice with probability P.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub(crate) duplicate: f64,
    /// Seed of the fault injection's random numbers (the same seed, the same faults).
    #[arg(long, value_name = "N", value_parser = parse_number, default_value = "1")]
    pub(crate) seed: u64,
    /// Apply DMA writes. They change what later reads see, never the file.
    #[arg(long)]
    pub(crate) allow_write: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum DumpFormatArg {
    /// makedumpfile's kdump-compressed (diskdump) format, as kdump writes it.
    Kdump,
    /// An ELF core (as /proc/vmcore): uncompressed, zero pages as holes of a sparse file.
    Elf,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum CompressArg {
    Zlib,
    Lzo,
    Snappy,
    Zstd,
    None,
}

#[derive(Args)]
pub(crate) struct DumpArgs {
    #[command(flatten)]
    pub(crate) common: LinuxCmdArgs,
    /// The vmcore to write (or give it as the last word).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// The vmcore to write, when not given with -o.
    #[arg(value_name = "FILE", required_unless_present = "output", conflicts_with = "output")]
    pub(crate) file: Option<PathBuf>,
    /// The file format.
    #[arg(long, value_enum, default_value = "kdump")]
    pub(crate) format: DumpFormatArg,
    /// How pages are compressed (kdump format only).
    #[arg(long, value_enum, default_value = "zlib")]
    pub(crate) compress: CompressArg,
    /// Pages to leave out, makedumpfile's bits added up: 1 zero pages, 2 cache pages, 4 cache
    /// pages with private data, 8 user pages, 16 free pages (31: all of them, what kdump
    /// uses; 0: every page).
    #[arg(long, short = 'd', value_name = "N", default_value = "31",
          value_parser = clap::value_parser!(u8).range(0..=31))]
    pub(crate) dump_level: u8,
    /// Overwrite FILE if it exists.
    #[arg(long, short = 'f')]
    pub(crate) force: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

#[derive(Args)]
pub(crate) struct GcoreArgs {
    #[command(flatten)]
    pub(crate) common: LinuxCmdArgs,
    /// The process (any of its threads' ids names it).
    #[arg(value_parser = parse_number)]
    pub(crate) pid: u64,
    /// The core file to write.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: PathBuf,
    /// Refuse to read more than this much of the process's mappings (their sizes added up):
    /// bytes, or with a K, M, G or T suffix.
    #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = parse_size)]
    pub(crate) max_size: u64,
    /// Overwrite FILE if it exists.
    #[arg(long, short = 'f')]
    pub(crate) force: bool,
}

/// A size: a number (0x… hex or decimal), optionally followed by K, M, G or T (powers of 1024;
/// none of them is a hex digit, so there is no ambiguity).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let shift = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => 10,
        Some('M') => 20,
        Some('G') => 30,
        Some('T') => 40,
        _ => 0,
    };
    let num = if shift > 0 { &t[..t.len() - 1] } else { t };
    let n = parse_number(num).map_err(|e| e.to_string())?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("'{text}' is too large"))
}
