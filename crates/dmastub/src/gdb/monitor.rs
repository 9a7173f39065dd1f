//! The `monitor` command language: short verbs that steer the stub (Ramooflax style).
//!
//! This file holds the grammar (nom) and the command table that `monitor help` prints; the
//! target runs the parsed [`Command`]. A line that does not parse gets one clear message back
//! and the session goes on.

use nom::{
    IResult,
    branch::alt,
    bytes::complete::{tag_no_case, take_while1},
    character::complete::{digit1, hex_digit1, space0},
    combinator::{all_consuming, map_res, opt},
    sequence::preceded,
};

/// A parsed `monitor` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Help,
    Phys,
    Virt,
    SetCr3(u64),
    Cr3,
    Flush,
    Vtop(u64),
    Stats {
        reset: bool,
    },
    /// The commands that need a Linux kernel found in memory.
    Linux(LinuxCommand),
    /// `info …`: QEMU's monitor, which dmastub is not. Answered with nothing: Linux's gdb
    /// scripts take any answer to `monitor info version` for QEMU, and then read gdb's thread
    /// number as the CPU number, which is wrong for a stub whose threads are tasks.
    QemuInfo(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinuxCommand {
    /// `lsmod [-p]`: the loaded modules; `-p` as `/proc/modules` prints them.
    Lsmod {
        proc: bool,
    },
    /// `ps [-t]`: the task list, with threads.
    Ps {
        threads: bool,
    },
    /// `switch PID` (Some) or `switch kernel` (None).
    Switch(Option<u64>),
    Kernel,
    /// `threads`: every task as gdb's thread, with where its registers came from.
    Threads,
    /// `dmesg [N]`: the last N lines.
    Dmesg(Option<u64>),
    /// `unwind PC SP [BP] [exact]`: one frame's caller by the kernel's unwind tables.
    Unwind {
        ip: u64,
        sp: u64,
        bp: Option<u64>,
        exact: bool,
    },
    /// `bt [PID]`: the backtrace of task PID, or of gdb's selected thread.
    Bt(Option<u64>),
    /// `bt -a`: the backtrace of the task each CPU was running.
    BtAll,
    /// `maps PID`: the process's memory map, as `/proc/PID/maps`.
    Maps(u64),
    /// `regs [user|kernel]`: which register set threads report (None: show which).
    Regs(Option<RegSet>),
}

/// The register set the threads of the task list report to gdb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum RegSet {
    /// What the kernel saved when the task last switched out (or the CPU's).
    #[default]
    Kernel,
    /// The user-mode registers saved on kernel entry (`task_pt_regs`).
    User,
}

/// Every command: its usage and one line of what it does. `monitor help` prints this table.
pub(crate) const COMMANDS: &[(&str, &str)] = &[
    ("help", "this list"),
    ("phys", "memory packets address physical memory"),
    ("virt", "memory packets address virtual memory through the active CR3"),
    ("set-cr3 ADDR", "make ADDR the active page-table root (also: set $cr3 = ADDR)"),
    ("cr3", "show the active CR3 and where it came from"),
    ("vtop ADDR", "walk the page tables for virtual ADDR: each level's entry, the page size, the result"),
    ("flush", "drop cached page-table pages and translations (re-read the tables)"),
    ("stats [reset]", "backend reads and cache hits since the last reset"),
    ("lsmod [-p]", "loaded modules: name, size, users, state, base, taint; -p prints /proc/modules' lines"),
    ("ps [-t]", "every task: PID, PPID, state, command, task_struct, CR3; -t adds threads"),
    (
        "threads",
        "every task as a gdb thread: thread id, pid, rip, rsp, CPU, and where the registers came from",
    ),
    ("switch PID|kernel", "make that task's page tables (or the kernel's) the active CR3"),
    (
        "bt [PID]",
        "backtrace of task PID (default: gdb's selected thread) from the kernel's ORC unwind tables, no vmlinux needed",
    ),
    (
        "bt -a",
        "backtrace of the task on every CPU, through the interrupt that stopped it into what it was doing",
    ),
    (
        "maps PID",
        "memory map of process PID as /proc/PID/maps prints it: VMAs, permissions, offset, device, inode, path",
    ),
    (
        "regs [user|kernel]",
        "threads report user-mode registers (task_pt_regs: with 'switch PID', 'file BINARY', 'bt' unwinds the process) or kernel ones",
    ),
    ("kernel", "what was found: release, KASLR slide, CR3, layout source, bytes read; vmlinux command"),
    ("dmesg [N]", "the kernel log from memory, last N lines"),
    (
        "unwind PC SP [BP] [exact]",
        "one frame's caller from the kernel's unwind tables (for gdb-scripts/dmastub.py's unwinder at interrupt entries)",
    ),
];

/// Text that is not a number as [`parse_number`] takes them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a number (use 0x… hex or decimal)")]
pub struct NumberError {
    /// The text, trimmed.
    pub text: String,
}

/// Why a `monitor` line did not parse: one line to show the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ParseError {
    /// Nothing but blanks.
    #[error("empty command; 'monitor help' lists the commands")]
    Empty,
    /// A verb no command has.
    #[error("unknown command '{0}'; 'monitor help' lists the commands")]
    Unknown(String),
    /// A command that takes an address got none.
    #[error("'{0}' needs an address, e.g. 'monitor {0} 0x1a20000'")]
    NeedsAddress(&'static str),
    /// A command that takes no arguments got some.
    #[error("'{command}' takes no arguments (got '{got}')")]
    NoArguments {
        /// The command.
        command: &'static str,
        /// What followed it.
        got: String,
    },
    /// A command with one optional word got another.
    #[error("'{command}' takes nothing or '{option}' (got '{got}')")]
    BadOption {
        /// The command.
        command: &'static str,
        /// The word it takes.
        option: &'static str,
        /// What followed it.
        got: String,
    },
    /// A command that takes a PID got none.
    #[error("'{0}' needs a PID, e.g. 'monitor {0} 93'")]
    NeedsPid(&'static str),
    /// `unwind` without its numbers.
    #[error(
        "'unwind' needs PC and SP, then optionally BP and 'exact', e.g. 'monitor unwind 0xffffffff81000000 0xffffc90000003f00'"
    )]
    UnwindUsage,
    /// `switch` without a PID or `kernel`.
    #[error("'switch' needs a PID or 'kernel', e.g. 'monitor switch 57'")]
    SwitchNeedsTarget,
    /// A command's number did not parse.
    #[error("{command}: {source}")]
    BadNumber {
        /// The command.
        command: &'static str,
        /// What was wrong with the number.
        #[source]
        source: NumberError,
    },
}

/// A number as the monitor and the command line take it: `0x` hex or decimal.
pub fn parse_number(text: &str) -> Result<u64, NumberError> {
    all_consuming(number)(text.trim())
        .map(|(_, v)| v)
        .map_err(|_| NumberError { text: text.trim().to_string() })
}

/// [`parse_number`] for command `command`'s argument.
fn number_arg(command: &'static str, text: &str) -> Result<u64, ParseError> {
    parse_number(text).map_err(|source| ParseError::BadNumber { command, source })
}

fn number(i: &str) -> IResult<&str, u64> {
    alt((
        map_res(preceded(tag_no_case("0x"), hex_digit1), |h| u64::from_str_radix(h, 16)),
        map_res(digit1, str::parse::<u64>),
    ))(i)
}

fn verb(i: &str) -> IResult<&str, &str> {
    preceded(space0, take_while1(|c: char| !c.is_whitespace()))(i)
}

/// The one argument of a command that takes an address.
fn address_arg(command: &'static str, rest: &str) -> Result<u64, ParseError> {
    let arg = rest.trim();
    if arg.is_empty() {
        return Err(ParseError::NeedsAddress(command));
    }
    number_arg(command, arg)
}

fn no_args(command: &'static str, rest: &str, cmd: Command) -> Result<Command, ParseError> {
    if rest.trim().is_empty() {
        Ok(cmd)
    } else {
        Err(ParseError::NoArguments { command, got: rest.trim().to_string() })
    }
}

/// Parses one `monitor` line. The error is the one line to show the user.
pub(crate) fn parse(line: &str) -> Result<Command, ParseError> {
    let Ok((rest, word)) = verb(line) else {
        return Err(ParseError::Empty);
    };
    match word.to_ascii_lowercase().as_str() {
        "help" => no_args("help", rest, Command::Help),
        "?" => no_args("?", rest, Command::Help),
        "phys" => no_args("phys", rest, Command::Phys),
        "virt" => no_args("virt", rest, Command::Virt),
        "cr3" => no_args("cr3", rest, Command::Cr3),
        "flush" => no_args("flush", rest, Command::Flush),
        "set-cr3" => address_arg("set-cr3", rest).map(Command::SetCr3),
        "vtop" => address_arg("vtop", rest).map(Command::Vtop),
        "stats" => {
            let parsed: IResult<&str, Option<&str>> =
                all_consuming(preceded(space0, opt(preceded(space0, tag_no_case("reset")))))(rest.trim_end());
            match parsed {
                Ok((_, r)) => Ok(Command::Stats { reset: r.is_some() }),
                Err(_) => Err(ParseError::BadOption {
                    command: "stats",
                    option: "reset",
                    got: rest.trim().to_string(),
                }),
            }
        }
        "kernel" => no_args("kernel", rest, Command::Linux(LinuxCommand::Kernel)),
        "threads" => no_args("threads", rest, Command::Linux(LinuxCommand::Threads)),
        "info" => Ok(Command::QemuInfo(rest.trim().to_string())),
        "ps" => match rest.trim() {
            "" => Ok(Command::Linux(LinuxCommand::Ps { threads: false })),
            "-t" => Ok(Command::Linux(LinuxCommand::Ps { threads: true })),
            other => Err(ParseError::BadOption { command: "ps", option: "-t", got: other.to_string() }),
        },
        "lsmod" => match rest.trim() {
            "" => Ok(Command::Linux(LinuxCommand::Lsmod { proc: false })),
            "-p" => Ok(Command::Linux(LinuxCommand::Lsmod { proc: true })),
            other => Err(ParseError::BadOption { command: "lsmod", option: "-p", got: other.to_string() }),
        },
        "switch" => match rest.trim() {
            "" => Err(ParseError::SwitchNeedsTarget),
            k if k.eq_ignore_ascii_case("kernel") => Ok(Command::Linux(LinuxCommand::Switch(None))),
            pid => number_arg("switch", pid).map(|p| Command::Linux(LinuxCommand::Switch(Some(p)))),
        },
        "bt" => match rest.trim() {
            "" => Ok(Command::Linux(LinuxCommand::Bt(None))),
            "-a" => Ok(Command::Linux(LinuxCommand::BtAll)),
            pid => number_arg("bt", pid).map(|p| Command::Linux(LinuxCommand::Bt(Some(p)))),
        },
        "maps" => match rest.trim() {
            "" => Err(ParseError::NeedsPid("maps")),
            pid => number_arg("maps", pid).map(|p| Command::Linux(LinuxCommand::Maps(p))),
        },
        "regs" => match rest.trim() {
            "" => Ok(Command::Linux(LinuxCommand::Regs(None))),
            w if w.eq_ignore_ascii_case("user") => Ok(Command::Linux(LinuxCommand::Regs(Some(RegSet::User)))),
            w if w.eq_ignore_ascii_case("kernel") => {
                Ok(Command::Linux(LinuxCommand::Regs(Some(RegSet::Kernel))))
            }
            other => Err(ParseError::BadOption {
                command: "regs",
                option: "user' or 'kernel",
                got: other.to_string(),
            }),
        },
        "unwind" => {
            let mut words: Vec<&str> = rest.split_whitespace().collect();
            let exact = words.last().is_some_and(|w| w.eq_ignore_ascii_case("exact"));
            if exact {
                words.pop();
            }
            let n = |w: &str| number_arg("unwind", w);
            match words[..] {
                [ip, sp] => {
                    Ok(Command::Linux(LinuxCommand::Unwind { ip: n(ip)?, sp: n(sp)?, bp: None, exact }))
                }
                [ip, sp, bp] => Ok(Command::Linux(LinuxCommand::Unwind {
                    ip: n(ip)?,
                    sp: n(sp)?,
                    bp: Some(n(bp)?),
                    exact,
                })),
                _ => Err(ParseError::UnwindUsage),
            }
        }
        "dmesg" => match rest.trim() {
            "" => Ok(Command::Linux(LinuxCommand::Dmesg(None))),
            n => number_arg("dmesg", n).map(|n| Command::Linux(LinuxCommand::Dmesg(Some(n)))),
        },
        _ => Err(ParseError::Unknown(word.to_string())),
    }
}

/// The `monitor help` text.
pub(crate) fn help_text() -> String {
    let width = COMMANDS.iter().map(|(u, _)| u.len()).max().unwrap_or(0);
    let mut s = String::from("dmastub monitor commands (numbers: 0x… hex or decimal):\n");
    for (usage, what) in COMMANDS {
        s.push_str(&format!("  {usage:<width$}  {what}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0x1A20000"), Ok(0x1a20000));
        assert_eq!(parse_number(" 4096 "), Ok(4096));
        assert_eq!(parse_number("0xffffffffffffffff"), Ok(u64::MAX));
        assert!(parse_number("0x").is_err());
        assert!(parse_number("0x10000000000000000").is_err());
        assert!(parse_number("12ab").is_err());
        assert!(parse_number("-1").is_err());
    }

    #[test]
    fn commands() {
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("  PHYS "), Ok(Command::Phys));
        assert_eq!(parse("set-cr3 0x2a5e000"), Ok(Command::SetCr3(0x2a5e000)));
        assert_eq!(parse("vtop 4993264"), Ok(Command::Vtop(4993264)));
        assert_eq!(parse("stats"), Ok(Command::Stats { reset: false }));
        assert_eq!(parse("stats reset"), Ok(Command::Stats { reset: true }));
        use LinuxCommand::*;
        assert_eq!(parse("ps"), Ok(Command::Linux(Ps { threads: false })));
        assert_eq!(parse("ps -t"), Ok(Command::Linux(Ps { threads: true })));
        assert_eq!(parse("threads"), Ok(Command::Linux(Threads)));
        assert_eq!(parse("lsmod"), Ok(Command::Linux(Lsmod { proc: false })));
        assert_eq!(parse("LSMOD -p"), Ok(Command::Linux(Lsmod { proc: true })));
        assert_eq!(parse("info version"), Ok(Command::QemuInfo("version".into())));
        assert!(parse("threads 5").is_err());
        assert_eq!(parse("switch 57"), Ok(Command::Linux(Switch(Some(57)))));
        assert_eq!(parse("switch KERNEL"), Ok(Command::Linux(Switch(None))));
        assert_eq!(parse("kernel"), Ok(Command::Linux(Kernel)));
        assert_eq!(parse("dmesg"), Ok(Command::Linux(Dmesg(None))));
        assert_eq!(parse("dmesg 0x14"), Ok(Command::Linux(Dmesg(Some(20)))));
        assert_eq!(parse("bt"), Ok(Command::Linux(Bt(None))));
        assert_eq!(parse("BT 93"), Ok(Command::Linux(Bt(Some(93)))));
        assert_eq!(parse("bt -a"), Ok(Command::Linux(BtAll)));
        assert_eq!(
            parse("unwind 0x10 0x20"),
            Ok(Command::Linux(Unwind { ip: 16, sp: 32, bp: None, exact: false }))
        );
        assert_eq!(
            parse("unwind 0x10 0x20 0x30 exact"),
            Ok(Command::Linux(Unwind { ip: 16, sp: 32, bp: Some(48), exact: true }))
        );
        assert_eq!(parse("unwind 0x10"), Err(ParseError::UnwindUsage));
        assert!(matches!(parse("unwind 0x10 zz"), Err(ParseError::BadNumber { command: "unwind", .. })));
        assert!(matches!(parse("bt -x"), Err(ParseError::BadNumber { command: "bt", .. })));
        assert_eq!(parse("maps 93"), Ok(Command::Linux(Maps(93))));
        assert_eq!(parse("MAPS 0x5d"), Ok(Command::Linux(Maps(93))));
        assert_eq!(parse("regs user"), Ok(Command::Linux(Regs(Some(RegSet::User)))));
        assert_eq!(parse("REGS Kernel"), Ok(Command::Linux(Regs(Some(RegSet::Kernel)))));
        assert_eq!(parse("regs"), Ok(Command::Linux(Regs(None))));
    }

    #[test]
    fn errors_are_one_clear_line() {
        for (line, want) in [
            ("", "empty command"),
            ("frobnicate", "unknown command 'frobnicate'"),
            ("set-cr3", "needs an address"),
            ("vtop zz", "'zz' is not a number"),
            ("phys now", "takes no arguments"),
            ("stats everything", "'stats' takes nothing or 'reset'"),
            ("ps -x", "'ps' takes nothing or '-t'"),
            ("lsmod all", "'lsmod' takes nothing or '-p'"),
            ("switch", "needs a PID or 'kernel'"),
            ("switch init", "'init' is not a number"),
            ("dmesg lots", "'lots' is not a number"),
            ("bt crasher", "bt: 'crasher' is not a number"),
            ("maps", "'maps' needs a PID"),
            ("maps init", "maps: 'init' is not a number"),
            ("regs both", "'regs' takes nothing or 'user' or 'kernel'"),
        ] {
            let err = parse(line).unwrap_err().to_string();
            assert!(err.contains(want), "{line:?} gave {err:?}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn help_lists_every_command() {
        let h = help_text();
        for (usage, _) in COMMANDS {
            assert!(h.contains(usage));
        }
    }
}
