//! Target profiles: TOML files that pin struct offsets (and, optionally, symbols) for a kernel
//! build without BTF. `targets/` ships some; `dmastub profile` writes new ones from BTF. The
//! format is described in `targets/README.md`.

use super::kallsyms::Kallsyms;
use super::{TypeInfo, TypeMap};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Profiles built into the binary: (name, TOML text).
pub const BUILT_IN: &[(&str, &str)] =
    &[("ubuntu-18.04-4.15.0-74-generic", include_str!("../../targets/ubuntu-18.04-4.15.0-74-generic.toml"))];

/// The fields dmastub reads, as (type, member path): what `dmastub profile` writes.
pub const USED_FIELDS: &[(&str, &[&str])] = &[
    (
        "task_struct",
        &[
            "tasks",
            "pid",
            "tgid",
            "comm",
            "real_parent",
            "children",
            "sibling",
            "__state",
            "state",
            "exit_state",
            "flags",
            "mm",
            "active_mm",
            "thread_group",
            "signal",
            "thread_node",
            "stack",
            "thread",
        ],
    ),
    ("thread_struct", &["sp"]),
    ("mm_struct", &["pgd"]),
    ("signal_struct", &["thread_head"]),
    ("list_head", &["next", "prev"]),
    ("printk_ringbuffer", &["desc_ring", "text_data_ring", "fail"]),
    ("prb_desc_ring", &["count_bits", "descs", "infos", "head_id", "tail_id"]),
    ("prb_data_ring", &["size_bits", "data", "head_lpos", "tail_lpos"]),
    ("prb_desc", &["state_var", "text_blk_lpos"]),
    ("prb_data_blk_lpos", &["begin", "next"]),
    ("printk_info", &["seq", "ts_nsec", "text_len", "caller_id"]),
    ("printk_log", &["ts_nsec", "len", "text_len", "dict_len"]),
];

/// A member given as an offset, or with its size too (needed where the size varies between
/// versions, e.g. `state`: `long` before 5.14, `unsigned int` after).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Field {
    /// Just the offset.
    Offset(u64),
    /// The offset and the size.
    Full {
        /// Byte offset in the struct.
        offset: u64,
        /// Size in bytes.
        size: u64,
    },
}

/// A struct-layout profile: a kernel's offsets, sizes and symbols, for kernels without BTF.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the profile is for, e.g. "ubuntu-18.04-4.15.0-74-generic".
    pub name: String,
    /// `uname -r` of the kernel (checked against the release found in memory).
    #[serde(default)]
    pub release: Option<String>,
    /// What the profile says of itself.
    #[serde(default)]
    pub description: Option<String>,
    /// Link-time addresses (as in System.map), moved by the KASLR slide: hex strings.
    #[serde(default)]
    pub symbols: BTreeMap<String, String>,
    /// Sizes of structs, by name.
    #[serde(default)]
    pub sizes: BTreeMap<String, u64>,
    /// Member offsets: `[offsets.task_struct] pid = 2216`.
    #[serde(default)]
    pub offsets: BTreeMap<String, BTreeMap<String, Field>>,
}

/// Why a profile could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The profile's file could not be read.
    #[error("cannot read profile {path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        err: std::io::Error,
    },
    /// The profile is not TOML of a profile's shape.
    #[error("profile {origin}: {source}")]
    Toml {
        /// Which profile.
        origin: String,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// A value in the profile is not valid.
    #[error("profile {origin}: {why}")]
    Parse {
        /// Which profile.
        origin: String,
        /// What is wrong.
        why: String,
    },
    /// No built-in profile has this name, and no file does.
    #[error("no profile named '{name}' and no such file; built-in profiles: {available}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The built-in profiles' names.
        available: String,
    },
}

impl Profile {
    /// Parses a profile's TOML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ProfileError> {
        let p: Profile =
            toml::from_str(text).map_err(|source| ProfileError::Toml { origin: origin.into(), source })?;
        for (name, addr) in &p.symbols {
            if parse_hex(addr).is_none() {
                return Err(ProfileError::Parse {
                    origin: origin.into(),
                    why: format!("symbol {name} = {addr:?} is not a 0x… hex address"),
                });
            }
        }
        Ok(p)
    }

    /// A built-in profile by name, or a file.
    pub fn load(name_or_path: &str) -> Result<Self, ProfileError> {
        if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(text, name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .map_err(|err| ProfileError::Io { path: path.display().to_string(), err })?;
            return Self::parse(&text, &path.display().to_string());
        }
        Err(ProfileError::Unknown {
            name: name_or_path.into(),
            available: BUILT_IN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        })
    }

    /// The built-in profile for a kernel release, if one exists.
    pub fn built_in_for(release: &str) -> Option<Self> {
        BUILT_IN
            .iter()
            .filter_map(|(n, t)| Self::parse(t, n).ok())
            .find(|p| p.release.as_deref() == Some(release))
    }

    /// The profile's layout as a table.
    pub fn types(&self) -> TypeMap {
        let mut map = TypeMap::new(format!("profile {}", self.name));
        for (ty, fields) in &self.offsets {
            for (member, f) in fields {
                let (offset, size) = match *f {
                    Field::Offset(o) => (o, 0),
                    Field::Full { offset, size } => (offset, size),
                };
                map.insert_member(ty, member, offset, size);
            }
        }
        for (ty, size) in &self.sizes {
            map.insert_size(ty, *size);
        }
        map
    }

    /// The pinned symbols (link addresses), if any.
    pub fn link_symbols(&self) -> Option<(Kallsyms, String)> {
        if self.symbols.is_empty() {
            return None;
        }
        let pairs = self.symbols.iter().filter_map(|(n, a)| Some((n.clone(), parse_hex(a)?)));
        Some((Kallsyms::from_pairs(pairs), format!("profile {}", self.name)))
    }

    /// A profile of every field dmastub uses, as `types` has them.
    pub fn from_types(name: &str, release: Option<&str>, types: &dyn TypeInfo) -> Self {
        let mut p = Profile {
            name: name.into(),
            release: release.map(String::from),
            description: Some(format!(
                "written by dmastub {} from {}",
                env!("CARGO_PKG_VERSION"),
                types.source()
            )),
            ..Default::default()
        };
        for (ty, members) in USED_FIELDS {
            if let Some(size) = types.size_of(ty) {
                p.sizes.insert(ty.to_string(), size);
            }
            for m in *members {
                if let Some(found) = types.member(ty, m) {
                    let f = Field::Full { offset: found.offset, size: found.size };
                    p.offsets.entry(ty.to_string()).or_default().insert(m.to_string(), f);
                }
            }
        }
        p
    }

    /// The profile as TOML: one `[offsets.TYPE]` table per struct, one line per member.
    pub fn to_toml(&self) -> String {
        let q = |v: &str| toml::Value::String(v.to_string()).to_string();
        let mut s = String::from("# dmastub target profile (format: targets/README.md)\n");
        let _ = writeln!(s, "name = {}", q(&self.name));
        if let Some(r) = &self.release {
            let _ = writeln!(s, "release = {}", q(r));
        }
        if let Some(d) = &self.description {
            let _ = writeln!(s, "description = {}", q(d));
        }
        if !self.symbols.is_empty() {
            s.push_str("\n[symbols]\n");
            for (n, a) in &self.symbols {
                let _ = writeln!(s, "{n} = {}", q(a));
            }
        }
        if !self.sizes.is_empty() {
            s.push_str("\n[sizes]\n");
            for (n, v) in &self.sizes {
                let _ = writeln!(s, "{n} = {v}");
            }
        }
        for (ty, fields) in &self.offsets {
            let _ = write!(s, "\n[offsets.{ty}]\n");
            for (m, f) in fields {
                let _ = match f {
                    Field::Offset(o) => writeln!(s, "{m} = {o}"),
                    Field::Full { offset, size } => {
                        writeln!(s, "{m} = {{ offset = {offset}, size = {size} }}")
                    }
                };
            }
        }
        s
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_parse() {
        for (name, text) in BUILT_IN {
            let p = Profile::parse(text, name).unwrap();
            assert_eq!(&p.name, name);
        }
        let p = Profile::load("ubuntu-18.04-4.15.0-74-generic").unwrap();
        let t = p.types();
        assert_eq!(t.member("task_struct", "pid").unwrap().offset, 2216);
        assert_eq!(t.member("task_struct", "comm").unwrap().offset, 2640);
        assert_eq!(t.member("task_struct", "state").unwrap().size, 8);
        assert_eq!(t.size_of("task_struct"), Some(9088));
        assert!(t.member("task_struct", "mm").is_none());
        assert_eq!(Profile::built_in_for("4.15.0-74-generic").map(|p| p.name), Some(p.name));
    }

    #[test]
    fn bad_profiles_say_why() {
        let e = Profile::parse("name = 3", "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml"), "{e}");
        let e =
            Profile::parse("name = \"a\"\n[symbols]\ninit_task = \"12\"", "y.toml").unwrap_err().to_string();
        assert!(e.contains("init_task"), "{e}");
        let e = Profile::parse("name = \"a\"\nbogus = 1", "z.toml").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = Profile::load("no-such-profile").unwrap_err().to_string();
        assert!(e.contains("ubuntu-18.04"), "{e}");
    }

    #[test]
    fn round_trip() {
        let p = Profile::load("ubuntu-18.04-4.15.0-74-generic").unwrap();
        let again = Profile::parse(&p.to_toml(), "round trip").unwrap();
        assert_eq!(p, again);
    }
}
