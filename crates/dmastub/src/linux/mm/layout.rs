//! Where the fields `maps` reads are: `mm_struct`, `vm_area_struct`, `file`, `inode`,
//! `dentry`, `mount`, all from the kernel's struct layout (BTF).

use super::MapsError;
use super::maple::MapleLayout;
use crate::linux::TypeInfo;

/// A field's offset and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct F {
    pub off: u64,
    pub size: u64,
}

/// The byte range `[lo, hi)` that holds every field of `fields`, or `None` when they are more
/// than `max` bytes apart (a layout that odd is read field by field).
pub(crate) fn span(fields: &[Option<F>]) -> (u64, u64) {
    let lo = fields.iter().flatten().map(|f| f.off).min().unwrap_or(0);
    let hi = fields.iter().flatten().map(|f| f.off.saturating_add(f.size)).max().unwrap_or(0);
    (lo, hi.max(lo))
}

/// The offsets `maps` needs.
#[derive(Clone, Debug)]
pub(crate) struct MmLayout {
    pub task_fs: Option<F>,
    pub fs_root_mnt: Option<F>,
    pub fs_root_dentry: Option<F>,
    // mm_struct
    pub mm_mt_root: Option<F>,
    pub mm_mmap: Option<F>,
    pub mm_pgd: Option<F>,
    pub start_code: F,
    pub end_code: F,
    pub start_data: F,
    pub end_data: F,
    pub start_brk: F,
    pub brk: F,
    pub start_stack: F,
    pub arg_start: F,
    pub arg_end: F,
    pub env_start: F,
    pub env_end: F,
    pub saved_auxv: Option<F>,
    pub context_flags: Option<F>,
    // vm_area_struct
    pub vm_start: F,
    pub vm_end: F,
    pub vm_next: Option<F>,
    pub vm_flags: F,
    pub vm_pgoff: F,
    pub vm_file: F,
    pub vm_ops: Option<F>,
    pub vm_private_data: Option<F>,
    pub anon_name: Option<F>,
    pub anon_vma_name_name: Option<F>,
    // file, inode, super_block
    pub f_path_mnt: F,
    pub f_path_dentry: F,
    pub f_inode: Option<F>,
    pub i_ino: F,
    pub i_sb: F,
    pub s_dev: F,
    pub d_inode: Option<F>,
    // dentry
    pub d_parent: F,
    pub d_name_len: F,
    pub d_name_name: F,
    pub d_hash_pprev: Option<F>,
    pub d_op: Option<F>,
    pub d_dname: Option<F>,
    // mount
    pub mnt_parent: Option<F>,
    pub mnt_mountpoint: Option<F>,
    pub mount_mnt: Option<F>,
    pub mnt_root: Option<F>,
    pub vm_ops_name: Option<F>,
    pub special_mapping_name: Option<F>,
    pub maple: MapleLayout,
}

impl MmLayout {
    pub fn from_types(t: &dyn TypeInfo) -> Result<Self, MapsError> {
        let opt = |ty: &str, m: &str| t.member(ty, m).map(|m| F { off: m.offset, size: m.size.max(1) });
        let need = |ty: &str, m: &str| {
            opt(ty, m).ok_or_else(|| MapsError::Layout { what: format!("{ty}.{m}"), origin: t.source() })
        };
        let mm_mt_root = match (opt("mm_struct", "mm_mt"), opt("maple_tree", "ma_root")) {
            (Some(mt), Some(r)) => Some(F { off: mt.off + r.off, size: 8 }),
            _ => None,
        };
        let mm_mmap = opt("mm_struct", "mmap");
        if mm_mt_root.is_none() && mm_mmap.is_none() {
            return Err(MapsError::Layout {
                what: "mm_struct.mm_mt (6.1 on) or mm_struct.mmap (before 6.1)".into(),
                origin: t.source(),
            });
        }
        // `struct path` is { mnt, dentry }.
        let path_mnt = opt("path", "mnt").map_or(0, |f| f.off);
        let path_dentry = opt("path", "dentry").map_or(8, |f| f.off);
        let f_path = need("file", "f_path")?;
        let qstr_len = opt("qstr", "len");
        let qstr_name = opt("qstr", "name");
        let d_name = need("dentry", "d_name")?;
        let mount_mnt = opt("mount", "mnt");
        let fs_root = opt("fs_struct", "root");
        Ok(Self {
            task_fs: opt("task_struct", "fs"),
            fs_root_mnt: fs_root.map(|r| F { off: r.off + path_mnt, size: 8 }),
            fs_root_dentry: fs_root.map(|r| F { off: r.off + path_dentry, size: 8 }),
            mm_mt_root,
            mm_mmap,
            mm_pgd: opt("mm_struct", "pgd"),
            start_code: need("mm_struct", "start_code")?,
            end_code: need("mm_struct", "end_code")?,
            start_data: need("mm_struct", "start_data")?,
            end_data: need("mm_struct", "end_data")?,
            start_brk: need("mm_struct", "start_brk")?,
            brk: need("mm_struct", "brk")?,
            start_stack: need("mm_struct", "start_stack")?,
            arg_start: need("mm_struct", "arg_start")?,
            arg_end: need("mm_struct", "arg_end")?,
            env_start: need("mm_struct", "env_start")?,
            env_end: need("mm_struct", "env_end")?,
            saved_auxv: opt("mm_struct", "saved_auxv"),
            context_flags: match (opt("mm_struct", "context"), opt("mm_context_t", "flags")) {
                (Some(c), Some(f)) => Some(F { off: c.off + f.off, size: f.size }),
                _ => None,
            },
            vm_start: need("vm_area_struct", "vm_start")?,
            vm_end: need("vm_area_struct", "vm_end")?,
            vm_next: opt("vm_area_struct", "vm_next"),
            vm_flags: need("vm_area_struct", "vm_flags")?,
            vm_pgoff: need("vm_area_struct", "vm_pgoff")?,
            vm_file: need("vm_area_struct", "vm_file")?,
            vm_ops: opt("vm_area_struct", "vm_ops"),
            vm_private_data: opt("vm_area_struct", "vm_private_data"),
            anon_name: opt("vm_area_struct", "anon_name"),
            anon_vma_name_name: opt("anon_vma_name", "name"),
            f_path_mnt: F { off: f_path.off + path_mnt, size: 8 },
            f_path_dentry: F { off: f_path.off + path_dentry, size: 8 },
            f_inode: opt("file", "f_inode"),
            i_ino: need("inode", "i_ino")?,
            i_sb: need("inode", "i_sb")?,
            s_dev: need("super_block", "s_dev")?,
            d_inode: opt("dentry", "d_inode"),
            d_parent: need("dentry", "d_parent")?,
            d_name_len: F { off: d_name.off + qstr_len.map_or(4, |f| f.off), size: 4 },
            d_name_name: F { off: d_name.off + qstr_name.map_or(8, |f| f.off), size: 8 },
            d_hash_pprev: match (opt("dentry", "d_hash"), opt("hlist_bl_node", "pprev")) {
                (Some(h), Some(p)) => Some(F { off: h.off + p.off, size: 8 }),
                _ => None,
            },
            d_op: opt("dentry", "d_op"),
            d_dname: opt("dentry_operations", "d_dname"),
            mnt_parent: opt("mount", "mnt_parent"),
            mnt_mountpoint: opt("mount", "mnt_mountpoint"),
            mount_mnt,
            mnt_root: opt("vfsmount", "mnt_root"),
            vm_ops_name: opt("vm_operations_struct", "name"),
            special_mapping_name: opt("vm_special_mapping", "name"),
            maple: MapleLayout::from_types(t),
        })
    }

    pub fn mm_fields(&self) -> Vec<Option<F>> {
        let mut v = vec![
            self.mm_mt_root,
            self.mm_mmap,
            self.mm_pgd,
            Some(self.start_code),
            Some(self.end_code),
            Some(self.start_data),
            Some(self.end_data),
            Some(self.start_brk),
            Some(self.brk),
            Some(self.start_stack),
            Some(self.arg_start),
            Some(self.arg_end),
            Some(self.env_start),
            Some(self.env_end),
            self.saved_auxv,
        ];
        v.push(self.context_flags);
        v
    }

    pub fn vma_fields(&self) -> Vec<Option<F>> {
        vec![
            Some(self.vm_start),
            Some(self.vm_end),
            self.vm_next,
            Some(self.vm_flags),
            Some(self.vm_pgoff),
            Some(self.vm_file),
            self.vm_ops,
            self.vm_private_data,
            self.anon_name,
        ]
    }

    pub fn dentry_fields(&self) -> Vec<Option<F>> {
        vec![
            Some(self.d_parent),
            Some(self.d_name_len),
            Some(self.d_name_name),
            self.d_hash_pprev,
            self.d_op,
            self.d_inode,
        ]
    }

    pub fn mount_fields(&self) -> Vec<Option<F>> {
        let root = match (self.mount_mnt, self.mnt_root) {
            (Some(m), Some(r)) => Some(F { off: m.off + r.off, size: 8 }),
            _ => None,
        };
        vec![self.mnt_parent, self.mnt_mountpoint, root]
    }
}
