//! gdb's `info os` documents (`qXfer:osdata:read`), built from the task list.

use crate::linux::threads::ThreadList;
use std::fmt::Write;

/// `info os` with no argument: the document types dmastub offers.
pub(crate) fn types() -> String {
    let mut s = header("types");
    s.push_str(
        "<item>\n<column name=\"Type\">processes</column>\n\
         <column name=\"Description\">Listing of all processes (thread group leaders) in the task list</column>\n\
         <column name=\"Title\">Processes</column>\n</item>\n",
    );
    s.push_str("</osdata>\n");
    s
}

/// `info os processes`: every process (thread-group leader) of the task list, and the CPU
/// it was running on, if it was. Without a task list, a comment says why the table is empty.
pub(crate) fn processes(list: &ThreadList, linux: bool) -> String {
    let mut s = header("processes");
    if list.threads.is_empty() {
        let why =
            if linux { "the task list could not be read" } else { "no Linux kernel was found in memory" };
        let _ = writeln!(s, "<!-- {why} -->");
    }
    for t in &list.threads {
        let task = &t.task;
        let is_leader = task.pid == task.tgid;
        let secondary_idle = t.idle_of.is_some_and(|cpu| cpu != 0);
        if !is_leader || secondary_idle {
            continue;
        }
        let user = if task.is_kernel_thread() { "kernel" } else { "user" };
        let cores = t.running_on.map(|c| c.to_string()).unwrap_or_default();
        let _ = write!(
            s,
            "<item>\n<column name=\"pid\">{}</column>\n<column name=\"user\">{user}</column>\n\
             <column name=\"command\">{}</column>\n<column name=\"cores\">{cores}</column>\n</item>\n",
            task.pid,
            escape(&task.comm)
        );
    }
    if !list.problems.is_empty() {
        let _ = writeln!(s, "<!-- {} -->", escape(&list.problems.join("; ")).replace("--", "- -"));
    }
    s.push_str("</osdata>\n");
    s
}

fn header(kind: &str) -> String {
    format!("<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"osdata.dtd\">\n<osdata type=\"{kind}\">\n")
}

/// Text as XML character data: markup characters as entities, control bytes as `?`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_escaped() {
        assert_eq!(escape("a<b>&\"c\"\u{1}"), "a&lt;b&gt;&amp;&quot;c&quot;?");
    }

    #[test]
    fn an_empty_list_says_why() {
        let doc = processes(&ThreadList::default(), false);
        assert!(doc.contains("no Linux kernel"), "{doc}");
        assert!(doc.ends_with("</osdata>\n"));
    }
}
