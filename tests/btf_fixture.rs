//! The BTF reader on the real kernel's `.BTF` of the 6.1 fixture: the offsets it finds agree
//! with the kernel's own VMCOREINFO and with the structures in the memory image.

mod common;

use common::*;
use dmastub::linux::Btf;
use dmastub::linux::{Member, TypeInfo};
use std::path::Path;
use std::time::Instant;

const FIXTURE: &str = "linux-6.1-kaslr";

fn m(offset: u64, size: u64) -> Member {
    Member { offset, size, bitfield: None }
}

#[test]
fn linux_6_1_layouts() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let data = std::fs::read(unpacked(&dir, "vmlinux.btf.zst")).expect("read the BTF fixture");
    assert_eq!(Btf::blob_len(&data).unwrap(), data.len());
    let t = Instant::now();
    let btf = Btf::parse(&data, "vmlinux.btf").expect("the kernel's BTF parses");
    eprintln!("parsed {} bytes, {} types in {:?}", data.len(), btf.type_count(), t.elapsed());
    assert!(btf.type_count() > 50_000);

    // VMCOREINFO of the fixture's 6.1.0-56-amd64 kernel says so.
    assert_eq!(btf.size_of("printk_ringbuffer"), Some(88));
    assert_eq!(btf.member("printk_ringbuffer", "text_data_ring").map(|m| m.offset), Some(48));
    assert_eq!(btf.member("printk_info", "ts_nsec").map(|m| m.offset), Some(8));
    assert_eq!(btf.member("prb_desc_ring", "infos").map(|m| m.offset), Some(16));
    assert_eq!(btf.size_of("printk_info"), Some(88));
    assert_eq!(btf.member("list_head", "prev"), Some(m(8, 8)));
    assert_eq!(btf.member("printk_ringbuffer", "desc_ring.count_bits"), Some(m(0, 4)));
    assert_eq!(btf.size_of("atomic_long_t"), Some(8));
    assert_eq!(btf.member("atomic_long_t", "counter"), Some(m(0, 8)));

    let task = |f: &str| btf.member("task_struct", f).unwrap_or_else(|| panic!("task_struct.{f} not found"));
    for f in [
        "tasks",
        "pid",
        "tgid",
        "comm",
        "real_parent",
        "__state",
        "flags",
        "mm",
        "active_mm",
        "thread.sp",
        "stack",
    ] {
        eprintln!("task_struct.{f:<12} {:?}", task(f));
    }
    let pgd = btf.member("mm_struct", "pgd").expect("mm_struct.pgd");
    eprintln!("mm_struct.pgd          {pgd:?}");
    eprintln!("sizeof(task_struct) = {:?}", btf.size_of("task_struct"));
    assert_eq!(task("comm").size, 16);
    assert_eq!(task("pid").size, 4);
    assert_eq!(task("tgid"), m(task("pid").offset + 4, 4));
    assert_eq!(task("active_mm").offset, task("mm").offset + 8);
    assert_eq!(task("mm").size, 8);
    assert_eq!(task("tasks").size, 16);
    assert_eq!(task("__state").size, 4);
    assert_eq!(task("thread.sp").size, 8);
    assert_eq!(pgd.size, 8);
    // pid_t is a typedef of int.
    assert_eq!(btf.size_of("pid_t"), Some(4));
    assert_eq!(btf.enum_value(Some("pid_type"), "PIDTYPE_PID"), Some(0));
    assert_eq!(btf.enum_value(None, "PIDTYPE_TGID"), Some(1));
    assert_eq!(btf.enum_value(None, "TASK_COMM_LEN"), Some(16));
    let members = btf.members("task_struct").expect("task_struct's members");
    let find = |n: &str| members.iter().find(|(name, _)| name == n).map(|(_, m)| *m);
    assert_eq!(find("pid"), Some(task("pid")));
    assert_eq!(find("mm"), Some(task("mm")));
    // Bitfields exist in task_struct (sched_reset_on_fork etc.): all inside the struct.
    let size = btf.size_of("task_struct").unwrap();
    assert!(members.iter().all(|(_, m)| m.offset + m.size <= size));
    assert!(members.iter().any(|(_, m)| m.bitfield.is_some()));
    check_against_memory(&dir, &btf);
}

/// Reads init_task and init_mm in the fixture's memory image with the offsets found.
fn check_against_memory(dir: &Path, btf: &Btf) {
    let image = std::fs::read(unpacked(dir, "pre-panic.raw.zst")).expect("read the image");
    let truth = truth(dir, "pre-panic");
    let sym = |name: &str, field: &str| hex(&truth["symbols"][name][field]);
    let bytes = |phys: u64, len: usize| &image[phys as usize..phys as usize + len];
    let u64_at = |phys: u64| u64::from_le_bytes(bytes(phys, 8).try_into().unwrap());
    let u32_at = |phys: u64| u32::from_le_bytes(bytes(phys, 4).try_into().unwrap());
    let off = |ty: &str, f: &str| btf.member(ty, f).unwrap().offset;
    let init = sym("init_task", "phys");
    assert_eq!(bytes(init + off("task_struct", "comm"), 10), b"swapper/0\0");
    assert_eq!(u32_at(init + off("task_struct", "pid")), 0);
    assert_eq!(u64_at(init + off("task_struct", "real_parent")), sym("init_task", "virt"));
    assert_eq!(u64_at(init + off("task_struct", "mm")), 0, "kernel threads have no mm");
    assert_eq!(u64_at(sym("init_mm", "phys") + off("mm_struct", "pgd")), sym("init_top_pgt", "virt"));
    // The next task on the list is init, reached through the direct map.
    let next = u64_at(init + off("task_struct", "tasks"));
    let first = next - hex(&truth["kaslr"]["page_offset_base"]) - off("task_struct", "tasks");
    assert_eq!(bytes(first + off("task_struct", "comm"), 5), b"init\0");
    assert_eq!(u32_at(first + off("task_struct", "pid")), 1);
    assert_eq!(u32_at(first + off("task_struct", "tgid")), 1);
    eprintln!("memory cross-check: init_task, init and init_mm read as expected");
}
