//! gdb driven one command at a time, and dmastub's own servers as child processes.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use crate::vm;

/// What gdb prints after every command, so that its answer ends somewhere.
const DONE: &str = "@@dmastub-demo-command-done@@";

/// A gdb reading commands from a pipe. Each [`GdbSession::run`] returns that command's output.
pub struct GdbSession {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl GdbSession {
    /// Starts `gdb -q -nx [file]` with pagination and confirmation off.
    pub fn start(file: Option<&Path>) -> io::Result<GdbSession> {
        let mut cmd = Command::new("gdb");
        cmd.args(["-q", "-nx"]);
        if let Some(f) = file {
            cmd.arg(f);
        }
        // One pipe for both streams keeps gdb's errors in order with its answers.
        let (reader, writer) = io::pipe()?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("running gdb (Debian/Ubuntu: apt-get install gdb): {e}"))
            })?;
        drop(cmd);
        vm::register(child.id(), Vec::new());
        let stdin = child.stdin.take().ok_or_else(|| io::Error::other("gdb has no stdin"))?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    break;
                }
                buf.clear();
            }
        });
        let mut gdb = GdbSession { child, stdin, lines };
        // An empty prompt: gdb prints one before every command it reads, even from a pipe.
        gdb.run("set prompt", Duration::from_secs(30))?;
        gdb.run("set pagination off", Duration::from_secs(30))?;
        gdb.run("set confirm off", Duration::from_secs(30))?;
        gdb.run("set width 0", Duration::from_secs(30))?;
        Ok(gdb)
    }

    /// Runs one command; its output (stdout and stderr) once gdb has finished it.
    pub fn run(&mut self, command: &str, timeout: Duration) -> io::Result<String> {
        writeln!(self.stdin, "{command}")?;
        writeln!(self.stdin, "echo \\n{DONE}\\n")?;
        self.stdin.flush()?;
        let deadline = Instant::now() + timeout;
        let mut out = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.trim_end() == DONE => break,
                Ok(line) => out.push_str(&line),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "gdb did not finish '{command}' within {} s; it printed: {out}",
                            timeout.as_secs()
                        ),
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::other(format!(
                        "gdb exited during '{command}'; it printed: {out}"
                    )));
                }
            }
        }
        // The marker's echo starts with a newline: drop the empty line it leaves.
        if out.ends_with('\n') && !out.ends_with("\n\n") && out.trim().is_empty() {
            out.clear();
        }
        Ok(out.strip_suffix('\n').map(str::to_string).unwrap_or(out))
    }
}

impl Drop for GdbSession {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "detach\nquit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        vm::forget(self.child.id());
    }
}

/// A dmastub child process (`serve` or `nettlp-emulator`), stopped when dropped.
pub struct DmastubChild {
    child: Child,
    /// What it printed up to and including its "serving" line.
    pub banner: String,
    /// For `serve`: the TCP port it listens on.
    pub port: Option<u16>,
}

impl DmastubChild {
    /// Starts this same executable with `args` and waits for the line that says it serves:
    /// `dmastub: serving … on HOST:PORT` or `nettlp-emulator: …`. `exe` is dmastub's path.
    pub fn start(exe: &Path, args: &[String], timeout: Duration) -> io::Result<DmastubChild> {
        let (reader, writer) = io::pipe()?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("starting {} {}: {e}", exe.display(), args.join(" ")))
            })?;
        vm::register(child.id(), Vec::new());
        let (tx, rx) = channel::<String>();
        std::thread::spawn(move || {
            // Up to the banner the lines are ours; after it what the child says (warnings,
            // failed reads under RUST_LOG) goes to stderr, and the pipe never fills.
            let mut banner_read = false;
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if banner_read || tx.send(line.clone()).is_err() {
                    banner_read = true;
                    eprintln!("{line}");
                }
            }
        });
        let deadline = Instant::now() + timeout;
        let mut banner = String::new();
        let port = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    banner.push_str(&line);
                    banner.push('\n');
                    if line.starts_with("nettlp-emulator:") {
                        break None;
                    }
                    // "dmastub: serving NAME (DESCRIPTION) on HOST:PORT, ACCESS": the port follows
                    // the last " on " (a description may hold colons, e.g. "requester 1b:00").
                    if line.contains(": serving ")
                        && let Some(p) = line
                            .rsplit_once(" on ")
                            .and_then(|(_, at)| at.split(',').next()?.rsplit_once(':'))
                            .map(|(_, p)| p)
                    {
                        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                        if let Ok(port) = digits.parse() {
                            break Some(port);
                        }
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    vm::forget(child.id());
                    return Err(io::Error::other(format!(
                        "dmastub {} did not start serving; it printed:\n{banner}",
                        args.join(" ")
                    )));
                }
            }
        };
        Ok(DmastubChild { child, banner, port })
    }
}

impl DmastubChild {
    /// The child's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DmastubChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        vm::forget(self.child.id());
    }
}
