//! Crafted memory must not make a walk grow without bound: the 6.1 image with its task list
//! replaced by a chain of words that each point to the next (every word a `list_head` whose
//! `next` is the following word) makes a "task list" of millions of entries, each of which is
//! also a thread group of millions. `ps -t`, `bt`, `bt PID` and gdb's thread list must finish
//! in bounded memory with a truncated list that says it is truncated and why.

mod common;

use common::*;
use dmastub::linux::Linux;
use dmastub::linux::{Hints, discover};
use dmastub::mmu::{AddressSpace, MmuConfig, Paging};
use dmastub::phys::{self, OpenOptions};
use dmastub::{PhysAddr, VirtAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const FIXTURE: &str = "linux-6.1-kaslr";
/// The chain: 32 MiB of words, 4 Mi "tasks" (as many as PID_MAX_LIMIT).
const CHAIN: u64 = 32 << 20;
/// What a bounded walk may use at most (the budget keeps it to a few hundred MiB).
const MAX_RSS_KIB: i64 = 1 << 20;
/// Address space a child may take: enough for a bounded walk, and an unbounded one aborts
/// quickly instead of taking the machine's memory.
const RLIMIT_AS: u64 = 4 << 30;

/// The patched copy of post-panic.raw, made once per test run.
fn chained_image() -> Option<&'static Path> {
    static IMAGE: OnceLock<Option<PathBuf>> = OnceLock::new();
    IMAGE.get_or_init(|| Some(make_chain(&unpacked(&fixture_dir(FIXTURE)?, "post-panic.raw.zst")))).as_deref()
}

fn make_chain(raw: &Path) -> PathBuf {
    let mem = phys::open_file(raw, &OpenOptions::default()).expect("open the image");
    let mut space = AddressSpace::new(mem, MmuConfig::new(Paging::Level4));
    let kernel = discover(&mut space, Hints::default()).expect("discover the kernel");
    let (cr3, pob) = (kernel.cr3.value, kernel.page_offset_base.value);
    let linux = Linux::new(kernel);
    let tasks_off = linux.task_layout().expect("layout").tasks.expect("task_struct.tasks");
    let init = linux.kernel.init_task.as_ref().expect("init_task").value;
    let head = init + tasks_off;
    let head_phys = space.translate_in(cr3, VirtAddr(head)).expect("translate init_task.tasks").phys.0;
    let mut bytes = std::fs::read(raw).expect("read the image");
    // A run of zero pages (free memory) for the chain, away from everything the kernel uses.
    let page = 4096usize;
    let mut start = None;
    let mut run = 0usize;
    for (i, p) in bytes.chunks(page).enumerate() {
        if p.iter().all(|&b| b == 0) {
            run += page;
            if run >= CHAIN as usize + 2 * page {
                start = Some((i + 1) * page - run + page);
                break;
            }
        } else {
            run = 0;
        }
    }
    let z = start.expect("a free run of 32 MiB in the image") as u64;
    assert!(PhysAddr(z).0 + CHAIN <= bytes.len() as u64);
    // init_task.tasks.next → the chain; each word → the next; the last one back to the head.
    let put = |bytes: &mut Vec<u8>, at: u64, v: u64| {
        bytes[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(&mut bytes, head_phys, pob + z);
    for w in (0..CHAIN).step_by(8) {
        let next = if w + 8 == CHAIN { head } else { pob + z + w + 8 };
        put(&mut bytes, z + w, next);
    }
    // Beside the unpacked fixture, under a name of its own; written aside and renamed.
    let out = raw.with_file_name("post-panic.chained-32M.raw");
    let tmp = raw.with_file_name(format!("post-panic.chained-32M.{}.part", std::process::id()));
    std::fs::write(&tmp, &bytes).expect("write the patched image");
    std::fs::rename(&tmp, &out).expect("move the patched image into place");
    out
}

/// `dmastub ARGS` with an address-space limit, measured.
fn limited(args: &[&str]) -> Measured {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: RLIMIT_AS, rlim_max: RLIMIT_AS };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    measure(&mut cmd, "")
}

fn check_truncated(what: &str, m: &Measured) {
    eprintln!("{what}: peak RSS {} MiB, {:.1} s", m.peak_rss_kib / 1024, m.wall.as_secs_f64());
    assert!(m.success, "{what} failed:\n{}", m.stderr.chars().take(2000).collect::<String>());
    assert!(m.peak_rss_kib < MAX_RSS_KIB, "{what}: peak RSS {} KiB", m.peak_rss_kib);
}

#[test]
fn ps_t_on_a_crafted_task_chain_is_truncated_and_says_why() {
    let Some(image) = chained_image() else { return };
    let image = image.to_str().unwrap();
    let m = limited(&["ps", "-t", "--image", image]);
    check_truncated("ps -t", &m);
    let marked: Vec<&str> = m.stdout.lines().filter(|l| l.contains("truncated")).collect();
    assert_eq!(marked.len(), 1, "one truncation line:\n{}", tail(&m.stdout));
    assert!(marked[0].contains("budget") && marked[0].contains("tasks"), "{}", marked[0]);
    // The real tasks are not in the chain, but the walk still shows what it read.
    assert!(m.stdout.lines().count() > 1000, "{}", tail(&m.stdout));
}

#[test]
fn bt_on_a_crafted_task_chain_is_bounded() {
    let Some(image) = chained_image() else { return };
    let image = image.to_str().unwrap();
    for args in [&["bt", "--image", image][..], &["bt", "--image", image, "1"][..]] {
        let m = limited(args);
        eprintln!("{args:?}: peak RSS {} MiB", m.peak_rss_kib / 1024);
        assert!(m.peak_rss_kib < MAX_RSS_KIB, "{args:?}: peak RSS {} KiB", m.peak_rss_kib);
        // Either a backtrace or a clear error naming the truncated list; never an abort.
        let all = format!("{}{}", m.stdout, m.stderr);
        assert!(!all.contains("memory allocation") && !all.contains("panicked"), "{args:?}: {}", tail(&all));
        assert!(all.contains("truncated"), "{args:?}: {}", tail(&all));
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
