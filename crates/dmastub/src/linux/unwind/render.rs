//! Backtraces as text, apart from finding them.

use super::*;
use std::fmt::Write as _;

impl Backtrace {
    /// The frames' function names, without offsets.
    pub fn functions(&self) -> Vec<&str> {
        self.frames
            .iter()
            .filter_map(|l| match l {
                Frame::Function { name, .. } => Some(name.split('+').next().unwrap_or(name)),
                Frame::Entry { .. } => None,
            })
            .collect()
    }

    /// The frames as `monitor bt` prints them, one line each, then why the walk stopped.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut n = 0;
        for l in &self.frames {
            let _ = match l {
                Frame::Function { ip, name, .. } => {
                    n += 1;
                    writeln!(s, "#{:<3}{ip:#018x} {name}", n - 1)
                }
                Frame::Entry { ip, sp, user: true } => {
                    writeln!(s, "--- interrupt/syscall entry from user mode: user rip {ip:#x}, rsp {sp:#x}")
                }
                Frame::Entry { ip, sp, user: false } => {
                    writeln!(s, "--- interrupt/exception entry: kernel rip {ip:#x}, rsp {sp:#x}")
                }
            };
        }
        if let Some(why) = &self.stopped {
            let _ = writeln!(s, "stopped: {why}");
        }
        s
    }
}
