//! The demo guest's files: a stock distribution kernel, a static busybox, the ticker (the
//! guest's own program, `guest/ticker.c`) and an initramfs that holds them with `guest/init.sh`.
//!
//! The kernel and busybox come from the distribution's packages by `apt-get download`, which
//! needs no root: nothing is installed on the host. They are kept in a cache directory.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cpio::{self, Entry};
use super::{VmError, run_tool};

const INIT_SCRIPT: &str = include_str!("guest/init.sh");
const TICKER_SOURCE: &str = include_str!("guest/ticker.c");

/// Where the guest's parts come from; `None` means from the distribution's packages.
#[derive(Debug, Clone, Default)]
pub struct GuestOptions {
    /// A bzImage to boot instead of the distribution's kernel.
    pub kernel: Option<PathBuf>,
    /// A static busybox instead of the one from `busybox-static`.
    pub busybox: Option<PathBuf>,
    /// Where downloads and built files are kept (see [`default_cache_dir`]).
    pub cache: PathBuf,
    /// More files for the initramfs: path (relative, e.g. `lib/modules/NAME.ko`, `bin/PROG`)
    /// and contents; their folders are made, and every one is executable.
    /// `lib/modules/load-order` (one module name a line) makes `init` insmod
    /// `lib/modules/NAME.ko` in that order at boot; `bin/dynticker`, when there, is started
    /// beside the ticker.
    pub extra_files: Vec<(String, Vec<u8>)>,
}

/// The files QEMU boots, and what they are.
#[derive(Debug, Clone)]
pub struct GuestFiles {
    /// The bzImage.
    pub kernel: PathBuf,
    /// The kernel's package (`linux-image-6.1.0-56-amd64`), or the file the user gave.
    pub kernel_origin: String,
    /// The initramfs built for it.
    pub initramfs: PathBuf,
    /// The ticker binary that runs in the guest: `add-symbol-file` gives gdb its symbols.
    pub ticker: PathBuf,
}

/// `$DMASTUB_VM_CACHE`, else `$XDG_CACHE_HOME/dmastub/vm`, else `~/.cache/dmastub/vm`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DMASTUB_VM_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("dmastub").join("vm")
}

/// Gets or builds every file the guest needs. `progress` hears one line per step.
pub fn prepare(opts: &GuestOptions, progress: &mut dyn FnMut(&str)) -> Result<GuestFiles, VmError> {
    let cache = &opts.cache;
    fs::create_dir_all(cache)
        .map_err(|e| VmError::io(format!("creating the cache {}", cache.display()), e))?;
    let (kernel, kernel_origin) = match &opts.kernel {
        Some(k) => (k.clone(), k.display().to_string()),
        None => distribution_kernel(cache, progress)?,
    };
    let busybox = match &opts.busybox {
        Some(b) => b.clone(),
        None => static_busybox(cache, progress)?,
    };
    let busybox_bytes = read_static_elf(&busybox)?;
    let ticker = build_ticker(cache)?;
    let ticker_bytes =
        fs::read(&ticker).map_err(|e| VmError::io(format!("reading {}", ticker.display()), e))?;

    // Another suite's guest (with other extra files) may be built from the same cache at once.
    let initramfs = if opts.extra_files.is_empty() {
        cache.join("initramfs.cpio")
    } else {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        opts.extra_files.hash(&mut h);
        cache.join(format!("initramfs-extra-{:016x}.cpio", h.finish()))
    };
    let mut entries = vec![
        Entry::Dir { path: "bin" },
        Entry::Dir { path: "dev" },
        Entry::Dir { path: "proc" },
        Entry::Dir { path: "sys" },
        Entry::Dir { path: "tmp" },
        // The kernel opens /dev/console for init before anything is mounted.
        Entry::CharDev { path: "dev/console", major: 5, minor: 1 },
        Entry::File { path: "init", mode: 0o755, data: INIT_SCRIPT.as_bytes() },
        Entry::File { path: "bin/busybox", mode: 0o755, data: &busybox_bytes },
        Entry::File { path: "bin/ticker", mode: 0o755, data: &ticker_bytes },
    ];
    // Each extra file's folders (but those above), parents first.
    let mut dirs: Vec<&str> = Vec::new();
    for (path, _) in &opts.extra_files {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            let dir = &path[..end];
            if !dirs.contains(&dir)
                && !entries.iter().any(|e| matches!(e, Entry::Dir { path } if *path == dir))
            {
                dirs.push(dir);
            }
            end += 1;
        }
    }
    entries.extend(dirs.into_iter().map(|path| Entry::Dir { path }));
    for (path, data) in &opts.extra_files {
        entries.push(Entry::File { path, mode: 0o755, data });
    }
    let mut archive = Vec::with_capacity(busybox_bytes.len() + ticker_bytes.len() + 8192);
    cpio::write_newc(&mut archive, &entries).map_err(|e| VmError::io("building the initramfs".into(), e))?;
    fs::write(&initramfs, archive).map_err(|e| VmError::io(format!("writing {}", initramfs.display()), e))?;
    Ok(GuestFiles { kernel, kernel_origin, initramfs, ticker })
}

/// The distribution's generic kernel package for this machine's distribution.
fn kernel_metapackage() -> Result<&'static str, VmError> {
    let os = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |name: &str| {
        os.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let (id, like) = (field("ID"), field("ID_LIKE"));
    if id == "ubuntu" || like.split_whitespace().any(|w| w == "ubuntu") {
        Ok("linux-image-generic")
    } else if id == "debian" || like.split_whitespace().any(|w| w == "debian") {
        Ok("linux-image-amd64")
    } else {
        Err(VmError::Msg(format!(
            "this is not Debian or Ubuntu ({}), so dmastub cannot fetch a kernel package: \
             pass --kernel with an x86-64 bzImage (e.g. /boot/vmlinuz-$(uname -r), if readable)",
            if id.is_empty() { "no /etc/os-release" } else { &id }
        )))
    }
}

/// The kernel of the distribution's current kernel package: `apt-get download`ed and its
/// `vmlinuz` unpacked into the cache (once).
fn distribution_kernel(cache: &Path, progress: &mut dyn FnMut(&str)) -> Result<(PathBuf, String), VmError> {
    let meta = kernel_metapackage()?;
    let depends = run_tool(Command::new("apt-cache").args(["depends", "--important", meta]), "apt-cache")?;
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| {
            VmError::Msg(format!(
                "apt-cache knows no kernel that {meta} depends on; run 'apt-get update' (as root) and try again"
            ))
        })?
        .to_string();
    let dir = cache.join(&package);
    if let Some(k) = find_vmlinuz(&dir.join("boot")) {
        return Ok((k, package));
    }
    progress(&format!("downloading the kernel package {package} (apt-get download, no root needed)"));
    let deb = download(&package, cache)?;
    fs::create_dir_all(&dir).map_err(|e| VmError::io(format!("creating {}", dir.display()), e))?;
    extract_from_deb(&deb, &dir, "./boot/vmlinuz-*")?;
    let kernel = find_vmlinuz(&dir.join("boot"))
        .ok_or_else(|| VmError::Msg(format!("{} holds no boot/vmlinuz-*", deb.display())))?;
    let _ = fs::remove_file(&deb);
    Ok((kernel, package))
}

fn find_vmlinuz(boot: &Path) -> Option<PathBuf> {
    fs::read_dir(boot)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
}

/// A static busybox: the host's own if it is static, else the one in `busybox-static`.
fn static_busybox(cache: &Path, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, VmError> {
    for host in ["/bin/busybox", "/usr/bin/busybox"] {
        if read_static_elf(Path::new(host)).is_ok() {
            return Ok(PathBuf::from(host));
        }
    }
    let dir = cache.join("busybox-static");
    let found =
        |dir: &Path| ["bin/busybox", "usr/bin/busybox"].iter().map(|p| dir.join(p)).find(|p| p.is_file());
    if let Some(b) = found(&dir) {
        return Ok(b);
    }
    progress("downloading busybox-static (apt-get download, no root needed)");
    let deb = download("busybox-static", cache)?;
    fs::create_dir_all(&dir).map_err(|e| VmError::io(format!("creating {}", dir.display()), e))?;
    extract_from_deb(&deb, &dir, "*/busybox")?;
    let _ = fs::remove_file(&deb);
    found(&dir).ok_or_else(|| VmError::Msg("the busybox-static package holds no bin/busybox".into()))
}

/// `apt-get download PACKAGE` into `dir`; returns the .deb.
pub fn download(package: &str, dir: &Path) -> Result<PathBuf, VmError> {
    run_tool(Command::new("apt-get").args(["download", "-q", package]).current_dir(dir), "apt-get download")?;
    let prefix = format!("{package}_");
    fs::read_dir(dir)
        .map_err(|e| VmError::io(format!("listing {}", dir.display()), e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .ok_or_else(|| VmError::Msg(format!("apt-get download {package} left no .deb in {}", dir.display())))
}

/// Unpacks the members of `deb` that match `pattern` into `dir` (dpkg-deb piped into tar).
pub fn extract_from_deb(deb: &Path, dir: &Path, pattern: &str) -> Result<(), VmError> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| VmError::io("running dpkg-deb".into(), e))?;
    let tar_input = dpkg.stdout.take().map(Stdio::from).unwrap_or_else(Stdio::null);
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(dir)
        .arg(pattern)
        .stdin(tar_input)
        .output()
        .map_err(|e| VmError::io("running tar".into(), e))?;
    let mut dpkg_err = String::new();
    if let Some(mut e) = dpkg.stderr.take() {
        let _ = e.read_to_string(&mut dpkg_err);
    }
    let dpkg_status = dpkg.wait().map_err(|e| VmError::io("waiting for dpkg-deb".into(), e))?;
    if !dpkg_status.success() || !tar.status.success() {
        return Err(VmError::Msg(format!(
            "unpacking {pattern} from {}: {}{}",
            deb.display(),
            dpkg_err.trim(),
            String::from_utf8_lossy(&tar.stderr).trim()
        )));
    }
    Ok(())
}

/// The file's bytes, if it is an x86-64 ELF executable with no program interpreter.
fn read_static_elf(path: &Path) -> Result<Vec<u8>, VmError> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let data = fs::read(path).map_err(|e| VmError::io(format!("reading {}", path.display()), e))?;
    let not_static =
        |why: String| VmError::Msg(format!("{}: not a static x86-64 executable: {why}", path.display()));
    let header = object::elf::FileHeader64::<object::Endianness>::parse(&*data)
        .map_err(|e| not_static(e.to_string()))?;
    let endian = header.endian().map_err(|e| not_static(e.to_string()))?;
    if header.e_machine(endian) != object::elf::EM_X86_64 {
        return Err(not_static("built for another machine".into()));
    }
    let segments = header.program_headers(endian, &*data).map_err(|e| not_static(e.to_string()))?;
    if segments.iter().any(|s| s.p_type(endian) == object::elf::PT_INTERP) {
        return Err(not_static("it is dynamically linked".into()));
    }
    Ok(data)
}

/// Compiles the ticker: static and non-PIE, so its global has one fixed address.
fn build_ticker(cache: &Path) -> Result<PathBuf, VmError> {
    let source = cache.join("ticker.c");
    let binary = cache.join("ticker");
    fs::write(&source, TICKER_SOURCE).map_err(|e| VmError::io(format!("writing {}", source.display()), e))?;
    run_tool(
        Command::new("gcc").args(["-static", "-no-pie", "-O1", "-g", "-o"]).arg(&binary).arg(&source),
        "gcc (building the guest's ticker; needs gcc and libc6-dev)",
    )?;
    read_static_elf(&binary)?;
    Ok(binary)
}
