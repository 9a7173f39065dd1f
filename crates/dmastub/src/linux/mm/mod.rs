//! A process's memory map, as `/proc/PID/maps` shows it: its VMAs from `mm->mm_mt` (the maple
//! tree, Linux 6.1 on) or `mm->mmap` (the list older kernels keep beside their rbtree), each
//! with its file's device, inode and path (from the dentry chain, across mounts, as `d_path`
//! builds it) or its name (`[heap]`, `[stack]`, `[vdso]`, `[vvar]`, `[anon:…]`).
//!
//! Over DMA a process costs a few round trips per level of its structures, not per VMA: the
//! maple tree is read a level at a time, then every VMA together, then files, inodes and
//! dentries level by level (`batch.rs`). Everything read is untrusted: walks are bounded
//! (VMAs, tree depth, path length), loops are detected, and every problem names the address.

mod batch;
pub mod dso;
mod layout;
pub(crate) mod maple;
mod pid;
pub(crate) use pid::find_task;
mod read;
pub mod render;
#[cfg(test)]
mod tests;

pub use dso::LoadedObjects;
pub use maple::{MapleEntry, MapleError};

use super::error::LinuxError;
use super::tasks::Task;
use super::{Linux, View};
use crate::mmu::{AddressSpace, MemError};

/// Most VMAs read for one process (`vm.max_map_count` defaults to 65530; 16 times that).
pub const MAX_VMAS: usize = 1 << 20;

/// One virtual memory area of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    /// `vm_area_struct` address.
    pub addr: u64,
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `vm_flags` (`VM_READ` 0x1, `VM_WRITE` 0x2, `VM_EXEC` 0x4, `VM_MAYSHARE` 0x80, …).
    pub flags: u64,
    /// `vm_pgoff`: the file offset in pages (for anonymous VMAs, `start >> 12`).
    pub pgoff: u64,
    /// The mapped file, when there is one.
    pub file: Option<MappedFile>,
    /// The name `/proc/PID/maps` shows for a VMA without a file: `[heap]`, `[stack]`,
    /// `[vdso]`, `[vvar]`, `[vsyscall]`, `[anon:NAME]`.
    pub name: Option<String>,
}

/// `VM_READ`.
pub const VM_READ: u64 = 0x1;
/// `VM_WRITE`.
pub const VM_WRITE: u64 = 0x2;
/// `VM_EXEC`.
pub const VM_EXEC: u64 = 0x4;
/// `VM_MAYSHARE`: `/proc/PID/maps` shows `s` instead of `p`.
pub const VM_MAYSHARE: u64 = 0x80;

/// The file a VMA maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedFile {
    /// `MAJOR(inode->i_sb->s_dev)`.
    pub dev_major: u32,
    /// `MINOR(inode->i_sb->s_dev)`.
    pub dev_minor: u32,
    /// `inode->i_ino`.
    pub inode: u64,
    /// Its path as `d_path` gives it (newlines escaped as `\012`, ` (deleted)` for an unlinked
    /// file), or `?` with the reason among the problems when it could not be read.
    pub path: String,
}

/// The `mm_struct` fields a core file and `/proc/PID/stat` need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MmInfo {
    /// The `mm_struct`'s address.
    pub mm: u64,
    /// `start_code`.
    pub start_code: u64,
    /// `end_code`.
    pub end_code: u64,
    /// `start_data`.
    pub start_data: u64,
    /// `end_data`.
    pub end_data: u64,
    /// `start_brk`.
    pub start_brk: u64,
    /// `brk`.
    pub brk: u64,
    /// `start_stack`.
    pub start_stack: u64,
    /// `arg_start`.
    pub arg_start: u64,
    /// `arg_end`.
    pub arg_end: u64,
    /// `env_start`.
    pub env_start: u64,
    /// `env_end`.
    pub env_end: u64,
    /// `saved_auxv` as (type, value) pairs, up to and including `AT_NULL`.
    pub saved_auxv: Vec<(u64, u64)>,
}

/// A process's memory map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessMaps {
    /// The task asked for.
    pub pid: i32,
    /// Its name.
    pub comm: String,
    /// Its page-table root (physical), 0 when `mm->pgd` could not be translated (see problems).
    pub cr3: u64,
    /// Its `mm_struct`.
    pub mm: MmInfo,
    /// Its VMAs, by address.
    pub vmas: Vec<Vma>,
    /// What could not be read, one sentence each naming the address; empty when all was.
    pub problems: Vec<String>,
}

/// Why a memory map could not be read at all.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MapsError {
    /// A kernel thread has no `mm`.
    #[error("pid {pid} ({comm}) is a kernel thread: it has no memory map")]
    KernelThread {
        /// Its pid.
        pid: i32,
        /// Its name.
        comm: String,
    },
    /// A process that has exited (a zombie, or one being torn down) has no `mm` any more.
    #[error("pid {pid} ({comm}) has no memory map: its mm is gone (it has exited)")]
    Exited {
        /// Its pid.
        pid: i32,
        /// Its name.
        comm: String,
    },
    /// The struct layout lacks a field the map needs.
    #[error("the struct layout ({origin}) has no {what}: memory maps unavailable")]
    Layout {
        /// The field.
        what: String,
        /// Where the layout came from.
        origin: String,
    },
    /// No struct layout at all.
    #[error("no struct layout: memory maps need the kernel's BTF or a profile")]
    NoTypes,
    /// The task's `mm_struct` could not be read.
    #[error("pid {pid} ({comm}): its mm_struct at {mm:#x} could not be read: {source}")]
    Mm {
        /// Its pid.
        pid: i32,
        /// Its name.
        comm: String,
        /// The `mm_struct`'s address.
        mm: u64,
        /// Why.
        #[source]
        source: MemError,
    },
}

impl MapsError {
    /// Whether the device failed.
    pub fn is_device_failure(&self) -> bool {
        matches!(self, MapsError::Mm { source, .. } if source.is_device_failure())
    }
}

impl Linux {
    /// The memory map of task `pid` (a process or one of its threads).
    pub fn maps(&self, space: &mut AddressSpace, pid: i32) -> Result<ProcessMaps, LinuxError> {
        let task = self.task_by_pid(space, pid)?;
        self.maps_of(space, &task)
    }

    /// The executable's load bias and the shared objects of the process whose map is `maps`,
    /// read in its address space (see [`dso::loaded_objects`]).
    pub fn loaded_objects(
        &self,
        space: &mut AddressSpace,
        maps: &ProcessMaps,
    ) -> Result<LoadedObjects, String> {
        if maps.cr3 == 0 {
            return Err(format!("pid {}: its page tables are unknown", maps.pid));
        }
        let mut view = View::new(space, maps.cr3);
        dso::loaded_objects(&mut view, maps)
    }

    /// The memory map of `task`, already read (from the task list or gdb's threads).
    pub fn maps_of(&self, space: &mut AddressSpace, task: &Task) -> Result<ProcessMaps, LinuxError> {
        let types = self.kernel.types.as_deref().ok_or(MapsError::NoTypes)?;
        let layout = layout::MmLayout::from_types(types)?;
        let mut view = View::new(space, self.kernel.cr3.value);
        view.log_traffic("memory map, before it");
        Ok(read::process_maps(&mut view, &layout, &self.kernel.symbols, task)?)
    }
}
