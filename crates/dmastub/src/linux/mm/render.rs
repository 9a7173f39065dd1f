//! `/proc/PID/maps` text, byte for byte as `fs/proc/task_mmu.c` (`show_map_vma`) prints it.

use super::{ProcessMaps, VM_EXEC, VM_MAYSHARE, VM_READ, VM_WRITE, Vma};
use std::fmt::Write as _;

/// The column a path or name starts after (`25 + sizeof(void *) * 6 - 1`, then one space).
const PAD: usize = 25 + 8 * 6 - 1;

/// One line of `/proc/PID/maps`, newline included.
pub fn maps_line(v: &Vma) -> String {
    let flag = |bit: u64, c: char| if v.flags & bit != 0 { c } else { '-' };
    // An anonymous VMA shows offset 0 and no device, whatever its vm_pgoff.
    let (pgoff, major, minor, ino) = match &v.file {
        Some(f) => (v.pgoff << 12, f.dev_major, f.dev_minor, f.inode),
        None => (0, 0, 0, 0),
    };
    let mut s = String::with_capacity(100);
    let _ = write!(
        s,
        "{:08x}-{:08x} {}{}{}{} {:08x} {:02x}:{:02x} {} ",
        v.start,
        v.end,
        flag(VM_READ, 'r'),
        flag(VM_WRITE, 'w'),
        flag(VM_EXEC, 'x'),
        if v.flags & VM_MAYSHARE != 0 { 's' } else { 'p' },
        pgoff,
        major,
        minor,
        ino
    );
    let name = v.file.as_ref().map(|f| f.path.as_str()).or(v.name.as_deref());
    if let Some(name) = name {
        // seq_pad: spaces up to the column (the header's own space counts), then one more.
        let len = s.len() - 1;
        if len < PAD {
            s.push_str(&" ".repeat(PAD - len));
        }
        s.push_str(name);
    }
    s.push('\n');
    s
}

/// The map as `/proc/PID/maps` prints it; what could not be read follows, each line starting
/// with `# ` (never a valid maps line).
pub fn maps(m: &ProcessMaps) -> String {
    let mut s: String = m.vmas.iter().map(maps_line).collect();
    for p in &m.problems {
        let _ = writeln!(s, "# {p}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::mm::MappedFile;

    fn vma(start: u64, end: u64, flags: u64, pgoff: u64) -> Vma {
        Vma { addr: 0, start, end, flags, pgoff, file: None, name: None }
    }

    #[test]
    fn lines_as_proc_prints_them() {
        let mut v = vma(0x400000, 0x401000, VM_READ, 0);
        v.file = Some(MappedFile { dev_major: 0, dev_minor: 2, inode: 11, path: "/bin/timekeeper".into() });
        assert_eq!(
            maps_line(&v),
            "00400000-00401000 r--p 00000000 00:02 11                                 /bin/timekeeper\n"
        );
        let v = vma(0x4a8000, 0x4ad000, VM_READ | VM_WRITE, 0x4a8);
        assert_eq!(maps_line(&v), "004a8000-004ad000 rw-p 00000000 00:00 0 \n");
        let mut v = vma(0x7ffc9743c000, 0x7ffc9745d000, VM_READ | VM_WRITE, 0);
        v.name = Some("[stack]".into());
        assert_eq!(
            maps_line(&v),
            "7ffc9743c000-7ffc9745d000 rw-p 00000000 00:00 0                          [stack]\n"
        );
        let mut v = vma(0x7f00_0000_0000, 0x7f00_0000_1000, VM_READ | VM_MAYSHARE, 3);
        v.file =
            Some(MappedFile { dev_major: 0x103, dev_minor: 0x12345, inode: 123456789012, path: "/x".into() });
        assert_eq!(
            maps_line(&v),
            "7f0000000000-7f0000001000 r--s 00003000 103:12345 123456789012           /x\n"
        );
        // A header past the column gets one space.
        let mut v = vma(0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000, VM_EXEC, 0);
        v.file =
            Some(MappedFile { dev_major: 0xfff, dev_minor: 0xfffff, inode: u64::MAX, path: "/y".into() });
        assert_eq!(
            maps_line(&v),
            "ffffffffff600000-ffffffffff601000 --xp 00000000 fff:fffff 18446744073709551615 /y\n"
        );
    }
}
