//! `dmastub kernel`, `ps`, `lsmod`, `dmesg`, `bt` and `profile`: the kernel in the memory, without gdb.

use crate::CliResult;
use crate::cli::{BtArgs, DmesgArgs, LinuxArgs, LinuxCmdArgs, LsmodArgs, MapsArgs, ProfileArgs, PsArgs};
use crate::source::{mmu_config, open_source, with_remedy};
use dmastub::linux::Btf;
use dmastub::linux::render_remedies;
use dmastub::linux::{Hint, Hints, Linux, LinuxError, discover, render};
use dmastub::linux::{Profile, load_system_map, load_vmlinux};
use dmastub::mmu::{AddressSpace, MmuConfig, Paging};
use dmastub::phys::{self, OpenOptions, WriteMode};

/// Finds the kernel with the user's hints.
pub(crate) fn find_linux(
    space: &mut AddressSpace,
    cr3: Option<u64>,
    a: &LinuxArgs,
) -> Result<Linux, Box<dyn std::error::Error>> {
    let mut hints = Hints { cr3, kaslr: a.kaslr, ..Default::default() };
    if let Some(p) = &a.system_map {
        hints.link_symbols = Some((load_system_map(p)?, format!("System.map {}", p.display())));
    }
    if let Some(p) = &a.vmlinux {
        hints.link_symbols = Some((load_vmlinux(p)?, format!("vmlinux {}", p.display())));
    }
    if let Some(p) = &a.btf {
        hints.types = Some(Box::new(Btf::load(p)?));
    }
    if let Some(name) = &a.profile {
        let prof = Profile::load(name)?;
        if hints.link_symbols.is_none() {
            hints.link_symbols = prof.link_symbols();
        }
        hints.types = Some(Box::new(prof.types()));
    }
    let kernel = discover(space, hints).map_err(|e| match render_remedies(e.remedies(), hint_flag) {
        r if r.is_empty() => e.to_string(),
        r => format!("{e}; {r}"),
    })?;
    Ok(Linux::new(kernel).with_hint_names(hint_flag))
}

/// The flag that gives `hint`.
pub(crate) fn hint_flag(hint: Hint) -> &'static str {
    match hint {
        Hint::Cr3 => "--cr3",
        Hint::Kaslr => "--kaslr",
        Hint::Paging => "--paging",
        Hint::SystemMap => "--system-map",
        Hint::Vmlinux => "--vmlinux",
        Hint::Btf => "--btf",
        Hint::Profile => "--profile",
        _ => "a hint",
    }
}

pub(crate) fn open_linux(a: &LinuxCmdArgs) -> Result<(AddressSpace, Linux), Box<dyn std::error::Error>> {
    let mem = open_source(&a.source, WriteMode::ReadOnly)?;
    let mut space = AddressSpace::new(mem, mmu_config(&a.mmu));
    let linux = find_linux(&mut space, a.cr3, &a.linux)?;
    Ok((space, linux))
}

pub(crate) fn kernel(a: LinuxCmdArgs) -> CliResult {
    let (_, linux) = open_linux(&a)?;
    print!("{}", render::kernel_report(linux.kernel(), hint_flag));
    Ok(())
}

pub(crate) fn ps(a: PsArgs) -> CliResult {
    let (mut space, linux) = open_linux(&a.common)?;
    let list = linux.tasks(&mut space, a.threads).map_err(|e| linux.explain(&e))?;
    print!("{}", render::ps(&list));
    Ok(())
}

pub(crate) fn lsmod(a: LsmodArgs) -> CliResult {
    let (mut space, linux) = open_linux(&a.common)?;
    let list = linux.modules(&mut space).map_err(|e| format!("lsmod: {e}"))?;
    if a.proc {
        print!("{}", dmastub::linux::modules::proc_modules(&list));
    } else {
        print!("{}", dmastub::linux::modules::lsmod(&list));
    }
    Ok(())
}

pub(crate) fn dmesg(a: DmesgArgs) -> CliResult {
    let (mut space, linux) = open_linux(&a.common)?;
    let log = linux.log(&mut space).map_err(|e| linux.explain(&e))?;
    print!("{}", render::dmesg(&log, a.lines));
    Ok(())
}

pub(crate) fn bt(a: BtArgs) -> CliResult {
    let (mut space, linux) = open_linux(&a.common)?;
    let explain = |e: LinuxError| linux.explain(&e);
    let list = linux.threads(&mut space).map_err(explain)?;
    if a.all {
        let names = linux.hint_names();
        let text = render::backtraces_of_cpus(&list, |t| {
            render::backtrace(t, linux.backtrace(&mut space, t), names)
        });
        print!("{text}");
        return Ok(());
    }
    let thread = linux.pick_thread(&list, a.pid).map_err(explain)?;
    print!("{}", render::bt(&list, thread, linux.backtrace(&mut space, thread), a.pid, linux.hint_names()));
    Ok(())
}

pub(crate) fn maps(a: MapsArgs) -> CliResult {
    let (mut space, linux) = open_linux(&a.common)?;
    let pid = i32::try_from(a.pid).map_err(|_| format!("{} is not a pid", a.pid))?;
    let maps = linux.maps(&mut space, pid).map_err(|e| linux.explain(&e))?;
    print!("{}", render::maps(&maps));
    Ok(())
}

pub(crate) fn write_profile(a: ProfileArgs) -> CliResult {
    let prof = match (&a.btf, &a.image) {
        (Some(p), _) => Profile::from_types(&a.name, a.release.as_deref(), &Btf::load(p)?),
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
            Profile::from_types(&a.name, release.as_deref(), types)
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
