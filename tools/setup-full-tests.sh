#!/usr/bin/env bash
# Fetches what the heavier ("full") tests need into a cache folder, then prints the environment
# that points the tests at it:
#   1. the DWARF vmlinux of the fixture kernel (Debian's linux-image-6.1.0-56-amd64-dbg),
#   2. Linux's own gdb helper scripts (scripts/gdb of Debian's linux-source-6.1, with
#      linux/constants.py generated for the fixture kernel's config),
#   3. drgn from PyPI, in a virtualenv, for reference stack traces,
#   4. the fixture kernel's own boot image (boot/vmlinuz of Debian's linux-image-6.1.0-56-amd64),
#      for tests that boot a guest whose kernel the DWARF vmlinux describes (tests/live_dump.rs).
#
# Usage: tools/setup-full-tests.sh            (progress on stderr, export lines on stdout)
#        eval "$(tools/setup-full-tests.sh)"  (sets them in the calling shell)
#
# With dmastub: `target remote` relocates vmlinux by qOffsets, which also moves the per-CPU
# section, so the per-CPU helpers ($lx_per_cpu, $lx_current, lx-timerlist) need the symbols as
# `monitor kernel` prints them: symbol-file; add-symbol-file VMLINUX -o SLIDE -s .data..percpu 0.
#
# Idempotent: each part is skipped when its result is already in the cache. Needs Debian 12
# (apt-get, dpkg-deb), network to Debian's mirrors and PyPI, and root (or sudo) only to run
# apt-get update/install when a build tool is missing.
#
# Environment:
#   DMASTUB_FULL_CACHE    cache folder (default ${XDG_CACHE_HOME:-$HOME/.cache}/dmastub-full)
#   DMASTUB_FIXTURES      fixture root, as for the tests (default ../shared/fixtures beside the
#                         repository); the kernel config is $DMASTUB_FIXTURES/linux-6.1-kaslr/config
#   DMASTUB_PYTHON        python for the drgn virtualenv (default python3)
#   DMASTUB_DRGN_VERSION  drgn version from PyPI (default 0.3.0; "latest" for the newest)
set -euo pipefail

KREL=6.1.0-56-amd64                # the fixture kernel's release (uname -r)
PKGVER=6.1.192-2                   # Debian version of every kernel package used
VMLINUX_SHA256=84367a1bafd57a1ba369bcae6ab2ff9dc532e8e6677dd9e6a6d8d804c082da9e
DBG_PKG=linux-image-$KREL-dbg
IMG_PKG=linux-image-$KREL
VMLINUZ_SHA256=26f2e57c99338feaf71c46fa4babdc7e1a6c115943002d109fdb746667104f5f
SRC_PKG=linux-source-6.1
DRGN_VERSION=${DMASTUB_DRGN_VERSION:-0.3.0}
PYTHON=${DMASTUB_PYTHON:-python3}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${DMASTUB_FULL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dmastub-full}
FIXTURES=${DMASTUB_FIXTURES:-$REPO/../shared/fixtures}
KCONFIG=$FIXTURES/linux-6.1-kaslr/config

say() { printf '[setup-full-tests] %s\n' "$*" >&2; }
die() { printf '[setup-full-tests] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
mib() { awk -v n="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MiB", n / 1048576 }'; }

SUMMARY=()
note() { SUMMARY+=("$*"); say "$*"; }

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
VMLINUX=$CACHE/vmlinux-$KREL
GDBDIR=$CACHE/linux-gdb-scripts-$PKGVER    # holds vmlinux-gdb.py and scripts/gdb/linux/
DRGN_VENV=$CACHE/drgn-venv
VMLINUZ=$CACHE/vmlinuz-$KREL

# Scratch folders go inside the cache (same file system, so the final mv is a rename) and are
# removed on any exit.
SCRATCH=()
cleanup() { if ((${#SCRATCH[@]})); then rm -rf "${SCRATCH[@]}"; fi; }
trap cleanup EXIT
# Sets DIR to a new scratch folder (not via $(...): the list must grow in this shell).
scratch() { DIR=$(mktemp -d "$CACHE/.tmp.XXXXXX"); SCRATCH+=("$DIR"); }

# ---- root, apt ------------------------------------------------------------------------------
SUDO=()
if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null; then SUDO=(sudo); fi
fi
as_root() {
    if [[ $EUID -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        die "need root (or sudo) for: $*"
    fi
    "${SUDO[@]}" "$@"
}

APT_UPDATED=0
apt_update() {
    if ((APT_UPDATED == 0)); then
        APT_UPDATED=1
        if [[ $EUID -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
            say "not root and no sudo: skipping apt-get update, using the package lists as they are"
            return
        fi
        say "apt-get update"
        as_root apt-get update -qq >&2 || die "apt-get update failed"
    fi
}

# Installs the Debian packages of "$@" that are not installed yet.
need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        apt_update
        say "apt-get install ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
            || die "apt-get install ${missing[*]} failed"
    fi
}

# apt-get download of package $1 at version $PKGVER into folder $2; sets DEB to the .deb's path.
apt_download() {
    local pkg=$1 dir=$2 t0 opts=()
    apt_update
    # As root, apt downloads as the _apt user, which cannot write into a folder under /root.
    [[ $EUID -eq 0 ]] && opts=(-o APT::Sandbox::User=root)
    t0=$(now)
    (cd "$dir" && apt-get download -qq "${opts[@]}" "$pkg=$PKGVER" >&2) \
        || die "apt-get download $pkg=$PKGVER failed (is $PKGVER still on the mirror? apt-cache policy $pkg)"
    DEB=$(echo "$dir/${pkg}_"*.deb)
    [[ -f $DEB ]] || die "apt-get download $pkg left no .deb in $dir"
    note "$pkg $PKGVER: downloaded $(mib "$DEB") in $(since "$t0")"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ---- 1. DWARF vmlinux -----------------------------------------------------------------------
part_vmlinux() {
    local t0 dir deb t1 member=./usr/lib/debug/boot/vmlinux-$KREL
    t0=$(now)
    if [[ -f $VMLINUX && -f $VMLINUX.sha256-ok ]] && [[ $VMLINUX.sha256-ok -nt $VMLINUX ]]; then
        note "vmlinux: cached ($VMLINUX)"
        return
    fi
    if [[ -f $VMLINUX ]] && [[ $(sha256_of "$VMLINUX") == "$VMLINUX_SHA256" ]]; then
        touch "$VMLINUX.sha256-ok"
        note "vmlinux: cached, checksum good ($VMLINUX)"
        return
    fi
    need_pkgs dpkg tar xz-utils
    scratch; dir=$DIR
    apt_download "$DBG_PKG" "$dir"; deb=$DEB
    say "extracting $member"
    t1=$(now)
    # The vmlinux is the 11th of the package's 4936 members: tar stops after it (--occurrence)
    # instead of decompressing the other 5 GB (3 s instead of 45 s). dpkg-deb then dies of
    # SIGPIPE, so its status is ignored; tar's status and the checksum below tell.
    { dpkg-deb --fsys-tarfile "$deb" 2>"$dir/dpkg-deb.err" || true; } \
        | tar -xf - -C "$dir" --occurrence=1 "$member" \
        || { cat "$dir/dpkg-deb.err" >&2; die "could not extract $member from $deb"; }
    rm -f "$deb"
    note "vmlinux: extracted $(mib "$dir/$member") in $(since "$t1")"
    [[ $(sha256_of "$dir/$member") == "$VMLINUX_SHA256" ]] \
        || die "sha256 of the extracted vmlinux is not $VMLINUX_SHA256"
    mv -f "$dir/$member" "$VMLINUX"
    touch "$VMLINUX.sha256-ok"
    note "vmlinux: done in $(since "$t0") ($VMLINUX)"
}

# ---- 2. Linux's gdb helper scripts ----------------------------------------------------------
# The smallest build that generates scripts/gdb/linux/constants.py: the fixture's config as
# .config, `make olddefconfig` (fills in the toolchain-dependent symbols without prompting),
# `make scripts_gdb` (its prerequisite prepare0 makes the generated headers that constants.py.in's
# includes need: autoconf.h, bounds.h, timeconst.h, the asm-generic and uapi wrappers; then cpp
# runs over constants.py.in). Nothing of the kernel itself is compiled.
part_gdb_scripts() {
    local t0 t1 dir deb src stamp want
    t0=$(now)
    [[ -f $KCONFIG ]] || die "kernel config $KCONFIG not found (set DMASTUB_FIXTURES)"
    want="$SRC_PKG $PKGVER config-sha256 $(sha256_of "$KCONFIG")"
    stamp=$GDBDIR/.built-from
    if [[ -f $stamp && $(cat "$stamp") == "$want" && -f $GDBDIR/scripts/gdb/linux/constants.py ]]; then
        note "gdb scripts: cached ($GDBDIR)"
        return
    fi
    need_pkgs dpkg tar xz-utils make gcc libc6-dev flex bison bc libssl-dev
    scratch; dir=$DIR
    apt_download "$SRC_PKG" "$dir"; deb=$DEB
    say "unpacking the kernel source"
    t1=$(now)
    mkdir "$dir/tree"
    dpkg-deb --fsys-tarfile "$deb" | tar -xOf - "./usr/src/$SRC_PKG.tar.xz" | tar -xJf - -C "$dir/tree" \
        || die "could not unpack $SRC_PKG.tar.xz from $deb"
    rm -f "$deb"
    src=$dir/tree/$SRC_PKG
    [[ -f $src/scripts/gdb/linux/constants.py.in ]] || die "no scripts/gdb in $SRC_PKG"
    note "gdb scripts: unpacked the source ($(du -sm "$src" | cut -f1) MiB) in $(since "$t1")"
    t1=$(now)
    cp "$KCONFIG" "$src/.config"
    make -C "$src" -s olddefconfig >&2 || die "make olddefconfig failed"
    make -C "$src" -s -j"$(nproc)" scripts_gdb >&2 || die "make scripts_gdb failed"
    [[ -s $src/scripts/gdb/linux/constants.py ]] || die "make scripts_gdb made no constants.py"
    note "gdb scripts: make olddefconfig + scripts_gdb in $(since "$t1")"
    # The layout vmlinux-gdb.py expects: it puts <its own folder>/scripts/gdb on sys.path.
    mkdir -p "$dir/out/scripts/gdb/linux"
    cp "$src/scripts/gdb/vmlinux-gdb.py" "$dir/out/"
    cp "$src"/scripts/gdb/linux/*.py "$dir/out/scripts/gdb/linux/"
    cp "$src/.config" "$dir/out/config"
    # Smoke test: gdb (its own python) imports every module against the vmlinux alone (no
    # target: lx-version then reads linux_banner from the file; constants.py evaluates kernel
    # symbols at import).
    local out
    out=$(gdb -q -nx -batch "$VMLINUX" -ex "source $dir/out/vmlinux-gdb.py" -ex lx-version 2>&1) || true
    if [[ $out != *"Linux version 6.1"* ]]; then
        printf '%s\n' "$out" >&2
        die "gdb could not use the built scripts"
    fi
    echo "$want" >"$dir/out/.built-from"
    rm -rf "$GDBDIR"
    mv "$dir/out" "$GDBDIR"
    note "gdb scripts: done in $(since "$t0") ($GDBDIR)"
}

# ---- 3. drgn --------------------------------------------------------------------------------
part_drgn() {
    local t0 spec have
    t0=$(now)
    spec=drgn
    [[ $DRGN_VERSION != latest ]] && spec="drgn==$DRGN_VERSION"
    if have=$("$DRGN_VENV/bin/drgn" --version 2>/dev/null) \
        && [[ $DRGN_VERSION == latest || $have == "drgn $DRGN_VERSION "* ]]; then
        note "drgn: cached (${have%% (*} in $DRGN_VENV)"
        return
    fi
    command -v "$PYTHON" >/dev/null || need_pkgs python3
    # Debian's python3 has venv only with python3-venv (ensurepip).
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then need_pkgs python3-venv; fi
    rm -rf "$DRGN_VENV"
    "$PYTHON" -m venv "$DRGN_VENV" || die "$PYTHON -m venv $DRGN_VENV failed"
    "$DRGN_VENV/bin/pip" install -q --disable-pip-version-check "$spec" >&2 \
        || die "pip install $spec failed"
    have=$("$DRGN_VENV/bin/drgn" --version) || die "drgn does not run"
    note "drgn: installed ${have%% (*} in $(since "$t0") ($(du -sm "$DRGN_VENV" | cut -f1) MiB venv)"
}

# ---- 4. the fixture kernel's boot image -----------------------------------------------------
# The bzImage of the same build as the DWARF vmlinux, so that a guest booted with it can be
# dumped and opened with crash (which needs the vmlinux of the very kernel that runs).
part_vmlinuz() {
    local t0 dir deb t1 member=./boot/vmlinuz-$KREL
    t0=$(now)
    if [[ -f $VMLINUZ && -f $VMLINUZ.sha256-ok ]] && [[ $VMLINUZ.sha256-ok -nt $VMLINUZ ]]; then
        note "vmlinuz: cached ($VMLINUZ)"
        return
    fi
    if [[ -f $VMLINUZ ]] && [[ $(sha256_of "$VMLINUZ") == "$VMLINUZ_SHA256" ]]; then
        touch "$VMLINUZ.sha256-ok"
        note "vmlinuz: cached, checksum good ($VMLINUZ)"
        return
    fi
    need_pkgs dpkg tar xz-utils
    scratch; dir=$DIR
    apt_download "$IMG_PKG" "$dir"; deb=$DEB
    say "extracting $member"
    t1=$(now)
    # The boot image comes before the modules: tar stops after it (--occurrence), and
    # dpkg-deb's SIGPIPE is ignored as in part 1; tar's status and the checksum tell.
    { dpkg-deb --fsys-tarfile "$deb" 2>"$dir/dpkg-deb.err" || true; } \
        | tar -xf - -C "$dir" --occurrence=1 "$member" \
        || { cat "$dir/dpkg-deb.err" >&2; die "could not extract $member from $deb"; }
    rm -f "$deb"
    note "vmlinuz: extracted $(mib "$dir/$member") in $(since "$t1")"
    [[ $(sha256_of "$dir/$member") == "$VMLINUZ_SHA256" ]] \
        || die "sha256 of the extracted vmlinuz is not $VMLINUZ_SHA256"
    mv -f "$dir/$member" "$VMLINUZ"
    touch "$VMLINUZ.sha256-ok"
    note "vmlinuz: done in $(since "$t0") ($VMLINUZ)"
}

T0=$(now)
say "cache: $CACHE"
# gdb itself (the tests drive it, and the gdb scripts are checked with it) and zstd (the tests
# unpack the fixtures with it).
if ! command -v gdb >/dev/null || ! command -v zstd >/dev/null; then need_pkgs gdb zstd; fi
part_vmlinux
part_gdb_scripts
part_drgn
part_vmlinuz
say "all done in $(since "$T0")"
say "summary:"
for s in "${SUMMARY[@]}"; do say "  $s"; done
say "set the environment with: eval \"\$($0)\"   or paste the lines below"
say "Linux's gdb helpers: gdb $VMLINUX -ex 'target remote ...' -ex 'source $GDBDIR/vmlinux-gdb.py'"
printf 'export DMASTUB_DWARF_VMLINUX=%q\n' "$VMLINUX"
printf 'export DMASTUB_LINUX_GDB_SCRIPTS=%q\n' "$GDBDIR"
printf 'export DMASTUB_FIXTURE_KERNEL=%q\n' "$VMLINUZ"
# shellcheck disable=SC2016 # $PATH is for the shell that evaluates this line
printf 'export PATH=%q:"$PATH"\n' "$DRGN_VENV/bin"
