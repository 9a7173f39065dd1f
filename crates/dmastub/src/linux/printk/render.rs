//! The log as text, apart from reading it.

use super::KernelLog;

impl KernelLog {
    /// The log as `dmesg` prints it: `[seconds.micros] text` per line, every line of a
    /// multi-line record prefixed, only the `last` N lines if asked; then one `dmesg: …` line
    /// per problem, so that a partial log never looks complete.
    pub fn render(&self, last: Option<usize>) -> String {
        let mut lines = Vec::new();
        for r in &self.records {
            let stamp = format!("[{:5}.{:06}]", r.ts_nsec / 1_000_000_000, r.ts_nsec % 1_000_000_000 / 1000);
            let text = r.text.strip_suffix('\n').unwrap_or(&r.text);
            for line in text.split('\n') {
                lines.push(if line.is_empty() { stamp.clone() } else { format!("{stamp} {line}") });
            }
        }
        let skip = last.map_or(0, |n| lines.len().saturating_sub(n));
        let mut out = String::new();
        for line in &lines[skip..] {
            out.push_str(line);
            out.push('\n');
        }
        for p in &self.problems {
            out.push_str("dmesg: ");
            out.push_str(p);
            out.push('\n');
        }
        out
    }
}
