//! Where a discovered value came from, and what the user can tell discovery instead: data, so
//! that the library names no command-line flag and an application names its own.

use std::borrow::Cow;
use std::fmt;

/// Something the user can give instead of letting discovery look for it; also a remedy an error
/// suggests. An application renders it as its own flag or field ([`HintNames`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Hint {
    /// The kernel's page-table root, as a CR3 value.
    Cr3,
    /// The KASLR slide of the kernel image.
    Kaslr,
    /// The paging depth (4 or 5 levels).
    Paging,
    /// The kernel's System.map.
    SystemMap,
    /// The kernel's vmlinux (its symbol table).
    Vmlinux,
    /// A BTF file (a copy of `/sys/kernel/btf/vmlinux`).
    Btf,
    /// A struct-layout profile.
    Profile,
}

impl Hint {
    /// The hint in plain words, for an application that has no name of its own for it.
    pub fn describe(self) -> &'static str {
        match self {
            Hint::Cr3 => "the kernel's CR3",
            Hint::Kaslr => "the KASLR slide",
            Hint::Paging => "the paging depth",
            Hint::SystemMap => "a System.map",
            Hint::Vmlinux => "a vmlinux",
            Hint::Btf => "a BTF file",
            Hint::Profile => "a profile",
        }
    }
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// How an application names [`Hint`]s to its user (the `dmastub` command: its flags).
/// [`Hint::describe`] names them in words.
pub type HintNames = fn(Hint) -> &'static str;

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The user gave it.
    Hint(Hint),
    /// Evidence in memory or in the dump's headers: which, as display text.
    Found(String),
    /// Nothing said otherwise: why the default is believed, as display text.
    Default(String),
}

impl Origin {
    /// The origin as `monitor kernel` shows it, with hints named by `names`.
    pub fn render(&self, names: HintNames) -> Cow<'_, str> {
        match self {
            Origin::Hint(h) => Cow::Borrowed(names(*h)),
            Origin::Found(s) => Cow::Borrowed(s),
            Origin::Default(why) => Cow::Owned(format!("default ({why})")),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(Hint::describe))
    }
}

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub origin: Origin,
}

impl<T> Found<T> {
    /// A value found as evidence in memory, described by `how`.
    pub fn evidence(value: T, how: impl Into<String>) -> Self {
        Self { value, origin: Origin::Found(how.into()) }
    }

    /// A value the user gave.
    pub fn hint(value: T, hint: Hint) -> Self {
        Self { value, origin: Origin::Hint(hint) }
    }

    /// A default value, and why it is believed.
    pub fn default_because(value: T, why: impl Into<String>) -> Self {
        Self { value, origin: Origin::Default(why.into()) }
    }
}

/// Remedies an error suggests: alternatives, each a set of hints to give together.
pub type Remedies = &'static [&'static [Hint]];

/// "give A, or B with C": `remedies` in words, hints named by `names`; empty when there are none.
pub fn render_remedies(remedies: Remedies, names: HintNames) -> String {
    let alternatives: Vec<String> =
        remedies.iter().map(|set| set.iter().map(|h| names(*h)).collect::<Vec<_>>().join(" with ")).collect();
    if alternatives.is_empty() { String::new() } else { format!("give {}", alternatives.join(", or ")) }
}
