//! The module list as text: `lsmod`'s table and `/proc/modules`' lines.

use super::{Module, ModuleList, ModuleState, taint_letters};
use std::fmt::Write as _;

/// "-" or "a,b," as `print_unload_info` prints the users (and `[permanent],`).
fn users(m: &Module) -> String {
    let mut s = String::new();
    for u in m.users.iter().flatten() {
        s.push_str(u);
        s.push(',');
    }
    if m.permanent {
        s.push_str("[permanent],");
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

fn stopped(list: &ModuleList, s: &mut String) {
    if let Some(why) = &list.stopped {
        let _ = writeln!(s, "incomplete: {why}");
    }
}

/// The modules as `/proc/modules` prints them (`m_show`): `name size refcnt users state
/// 0xbase [(taints)]`, leaving out modules still being set up. What the layout does not have
/// is `?`, never a made-up value.
pub fn proc_modules(list: &ModuleList) -> String {
    let mut s = String::new();
    for m in &list.modules {
        if m.state == Some(ModuleState::Unformed) {
            continue;
        }
        let refs = m.refcount.map_or("?".to_string(), |r| r.to_string());
        let users = if m.users.is_some() { users(m) } else { "?".to_string() };
        let state = m.state.map_or("?".to_string(), |st| st.to_string());
        let size = m.size.map_or("?".to_string(), |v| v.to_string());
        let _ = write!(s, "{} {size} {refs} {users} {state} 0x{:016x}", m.name, m.base);
        if let Some(t) = m.taints.filter(|&t| t != 0) {
            let _ = write!(s, " ({})", taint_letters(t));
        }
        s.push('\n');
    }
    stopped(list, &mut s);
    s
}

/// The modules as a table (`lsmod`'s columns, with crash's base, state and taint).
pub fn lsmod(list: &ModuleList) -> String {
    let mut s = String::new();
    if list.modules.is_empty() {
        s.push_str("no modules loaded\n");
        stopped(list, &mut s);
        return s;
    }
    let _ = writeln!(
        s,
        "{:<24} {:>8}  {:<24} {:<9} {:<18}  {:<6} struct module",
        "Module", "Size", "Used by", "State", "Base", "Taint"
    );
    for m in &list.modules {
        let refs = m.refcount.map_or("?".to_string(), |r| r.to_string());
        let by = match &m.users {
            Some(u) if !u.is_empty() || m.permanent => {
                let mut v = u.join(",");
                if m.permanent {
                    v.push_str(if v.is_empty() { "[permanent]" } else { ",[permanent]" });
                }
                format!("{refs} {v}")
            }
            Some(_) => refs,
            None => format!("{refs} ?"),
        };
        let state = m.state.map_or("?".to_string(), |st| st.to_string());
        let taint = match m.taints {
            Some(0) => String::new(),
            Some(t) => format!("({})", taint_letters(t)),
            None => "?".to_string(),
        };
        let size = m.size.map_or("?".to_string(), |v| v.to_string());
        let _ = writeln!(
            s,
            "{:<24} {size:>8}  {by:<24} {state:<9} {:#018x}  {taint:<6} {:#x}",
            m.name, m.base, m.addr
        );
    }
    let _ = writeln!(s, "{} modules", list.modules.len());
    stopped(list, &mut s);
    s
}
