//! `dmastub dump`: the machine's memory as a vmcore file, with a progress bar, stopped cleanly
//! by Ctrl-C.

use crate::CliResult;
use crate::cli::{CompressArg, DumpArgs, DumpFormatArg};
use crate::kernel::find_linux;
use crate::source::{mmu_config, open_source};
use dmastub::dump::{Control, DumpFormat, DumpOptions, DumpSummary, Machine, Progress, dump_ram, write_dump};
use dmastub::linux::{DumpLevel, Linux, PageSet, classify};
use dmastub::mmu::AddressSpace;
use dmastub::phys::kdump::Compression;
use dmastub::phys::{WriteMode, human_bytes};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub(crate) fn dump(a: DumpArgs) -> CliResult {
    let Some(path) = a.output.clone().or(a.file.clone()) else {
        return Err("give the file to write: -o FILE".into());
    };
    if path.exists() && !a.force {
        return Err(format!("{}: already exists; pass --force to overwrite it", path.display()).into());
    }
    let level = DumpLevel(a.dump_level);
    let opts = DumpOptions {
        format: match a.format {
            DumpFormatArg::Kdump => DumpFormat::Kdump,
            DumpFormatArg::Elf => DumpFormat::Elf,
        },
        compression: match a.compress {
            CompressArg::Zlib => Compression::Zlib,
            CompressArg::Lzo => Compression::Lzo,
            CompressArg::Snappy => Compression::Snappy,
            CompressArg::Zstd => Compression::Zstd,
            CompressArg::None => Compression::None,
        },
        level,
    };
    let started = Instant::now();
    let mem = open_source(&a.common.source, WriteMode::ReadOnly)?;
    let mut space = AddressSpace::new(mem, mmu_config(&a.common.mmu));
    let linux = match find_linux(&mut space, a.common.cr3, &a.common.linux) {
        Ok(l) => Some(l),
        // Zero pages are told by their content: levels 0 and 1 need no kernel.
        Err(e) if level.0 <= DumpLevel::ZERO => {
            eprintln!("dmastub: warning: no kernel found ({e}): the dump holds every page but no VMCOREINFO");
            None
        }
        Err(e) => {
            return Err(format!(
                "{e}; dump level {} needs the kernel's struct page array to choose pages (--dump-level 0 \
                 keeps every page without it, 1 every page but zero pages)",
                level.0
            )
            .into());
        }
    };
    let machine = match &linux {
        Some(l) => Machine::from_linux(l, &mut space),
        None => Machine::from_source_notes(space.mem().core_notes()),
    };
    let quiet = a.quiet;
    // The traffic of each phase on its own, for the report: discovery's is not the dump's.
    space.mem_mut().reset_traffic();
    let pages = choose_pages(linux.as_ref(), &mut space, level, quiet)?;
    // The kernel's symbols and types are not needed to write pages: give their memory back.
    drop(linux);
    let choosing_traffic = space.mem().traffic();
    space.mem_mut().reset_traffic();

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // A second Ctrl-C while the file is being finished has nothing more to stop.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("{}: cannot create: {e}", path.display()))?;
    let bar = progress_bar(pages.kept_count(), quiet);
    let mut on_progress = |p: &Progress| {
        bar.set_position(p.pages_done);
        bar.set_message(format!("{} read", human_bytes(p.bytes_read)));
    };
    let control = Control { progress: &mut on_progress, stop: &stop };
    let write_started = Instant::now();
    let summary = write_dump(&mut space, &pages, &machine, &opts, &file, control)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    bar.finish_and_clear();
    let mut lines = vec![format!(
        "pages: {} of RAM: {}",
        pages.counts.pages.iter().sum::<u64>() + pages.counts.no_struct_page,
        pages.counts
    )];
    if pages.mem_map_bytes > 0 {
        lines.push(format!("mem_map: {} bytes of struct page read to choose them", pages.mem_map_bytes));
    }
    lines.extend(pages.notes.iter().cloned());
    lines.extend(machine.found.iter().cloned());
    if let Some(t) = choosing_traffic {
        lines.push(format!("choosing pages: {t}"));
    }
    if let Some(t) = space.mem().traffic() {
        lines.push(format!("dumping: {t}"));
    }
    report(
        &path,
        &opts,
        &summary,
        write_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64(),
        &lines,
    );
    match &summary.stopped {
        None => Ok(()),
        Some(why) => Err(format!(
            "{why}: {} is a partial dump holding {} of the {} pages chosen, marked incomplete in its header",
            path.display(),
            summary.pages_written,
            pages.kept_count()
        )
        .into()),
    }
}

/// Every RAM page at level 0; otherwise the kernel's `struct page` array decides.
fn choose_pages(
    linux: Option<&Linux>,
    space: &mut AddressSpace,
    level: DumpLevel,
    quiet: bool,
) -> Result<PageSet, Box<dyn std::error::Error>> {
    let (ram, whence) = dump_ram(space, linux.map(|l| l.kernel()))?;
    let Some(linux) = linux.filter(|_| level.0 != 0) else {
        let mut set = PageSet::all_ram(&ram);
        set.notes.push(whence);
        return Ok(set);
    };
    let bar = progress_bar(0, quiet);
    bar.set_prefix("choosing pages");
    let mut on_progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let mut set = classify(linux.kernel(), space, &ram, level, &mut on_progress)?;
    set.notes.push(whence);
    bar.finish_and_clear();
    Ok(set)
}

fn progress_bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} pages, {per_sec}, {msg}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("dumping");
    bar
}

fn report(
    path: &std::path::Path,
    opts: &DumpOptions,
    s: &DumpSummary,
    write_secs: f64,
    total_secs: f64,
    lines: &[String],
) {
    let what = match opts.format {
        DumpFormat::Kdump => format!("kdump-compressed, {}", opts.compression.name()),
        DumpFormat::Elf => "ELF".to_string(),
    };
    eprintln!(
        "{}: {what}, dump level {}: {} pages ({} all zero), {} in {:.1} s ({:.1} s in all, {}/s read)",
        path.display(),
        opts.level.0,
        s.pages_written,
        s.zero_pages,
        human_bytes(s.file_bytes),
        write_secs,
        total_secs,
        human_bytes((s.bytes_read as f64 / write_secs.max(1e-3)) as u64),
    );
    for line in lines {
        eprintln!("  {line}");
    }
    if s.unreadable_pages > 0 {
        eprintln!(
            "  {} pages could not be read and are not in the dump (readers see them as left out), e.g.:",
            s.unreadable_pages
        );
        for line in &s.unreadable {
            eprintln!("    {line}");
        }
    }
}
