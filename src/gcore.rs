//! `dmastub gcore PID -o FILE`: a process's core file, for `gdb BINARY FILE`.

use crate::CliResult;
use crate::cli::GcoreArgs;
use crate::kernel::open_linux;
use dmastub::dump::gcore::{GcoreOptions, process_core, write_core};
use dmastub::phys::human_bytes;

pub(crate) fn gcore(a: GcoreArgs) -> CliResult {
    let path = &a.output;
    if path.exists() && !a.force {
        return Err(format!("{}: already exists; pass --force to overwrite it", path.display()).into());
    }
    let pid = i32::try_from(a.pid).map_err(|_| format!("{} is not a pid", a.pid))?;
    let (mut space, linux) = open_linux(&a.common)?;
    let core = process_core(&linux, &mut space, pid).map_err(|e| linux.explain(&e))?;
    for p in &core.problems {
        eprintln!("dmastub: {p}");
    }
    let opts = GcoreOptions { max_bytes: a.max_size };
    let mut read = core.reader(&mut space);
    let s = write_core(&core.process, &mut *read, path, &opts).map_err(|e| match e {
        dmastub::dump::gcore::GcoreError::TooBig { .. } => format!("{e} with --max-size"),
        e => e.to_string(),
    })?;
    let p = &core.process;
    eprintln!(
        "dmastub: wrote {}: pid {} ({}), {} thread{}, {} mapping{}, {} of memory in {} segment{} ({})",
        path.display(),
        p.pid,
        p.comm,
        p.threads.len(),
        if p.threads.len() == 1 { "" } else { "s" },
        p.mappings.len(),
        if p.mappings.len() == 1 { "" } else { "s" },
        human_bytes(s.pages_written * 4096),
        s.segments,
        if s.segments == 1 { "" } else { "s" },
        human_bytes(s.file_bytes),
    );
    if s.pages_absent > 0 {
        eprintln!(
            "dmastub: {} page{} of readable mappings absent (not present in memory: swapped out, never touched, \
             or not in the source): left out of the core, not written as zeros; gdb reports them as \
             inaccessible (file-backed ones it reads from the file). First ranges:",
            s.pages_absent,
            if s.pages_absent == 1 { "" } else { "s" }
        );
        for (lo, hi, why) in &s.absent {
            eprintln!("  {lo:#x}-{hi:#x}: {why}");
        }
    }
    for skipped in &s.skipped {
        eprintln!("dmastub: not read: {skipped}");
    }
    Ok(())
}
