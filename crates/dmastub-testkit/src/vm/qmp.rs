//! Just enough of QEMU's QMP to pause, resume and stop the guest, and to run a command with
//! arguments (`dump-guest-memory`) for a test.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::VmError;

pub(crate) struct Qmp {
    stream: BufReader<UnixStream>,
}

impl Qmp {
    pub(crate) fn connect(path: &Path) -> Result<Qmp, VmError> {
        let io = |e| VmError::io(format!("QMP socket {}", path.display()), e);
        let stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(io)?;
        let mut qmp = Qmp { stream: BufReader::new(stream) };
        qmp.reply()?; // the greeting
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    /// Runs a QMP command without arguments; an `error` reply is an error.
    pub(crate) fn execute(&mut self, command: &str) -> Result<(), VmError> {
        self.execute_with(command, None).map(drop)
    }

    /// Runs a QMP command with `arguments` (a JSON object, as text) and returns its reply line
    /// (`{"return": ...}`); an `error` reply is an error. The reply comes when QEMU has finished
    /// the command (a synchronous `dump-guest-memory` included), within the socket's timeout.
    pub(crate) fn execute_with(&mut self, command: &str, arguments: Option<&str>) -> Result<String, VmError> {
        let msg = match arguments {
            Some(args) => format!("{{\"execute\":\"{command}\",\"arguments\":{args}}}\n"),
            None => format!("{{\"execute\":\"{command}\"}}\n"),
        };
        self.stream
            .get_mut()
            .write_all(msg.as_bytes())
            .map_err(|e| VmError::io(format!("QMP {command}"), e))?;
        let reply = self.reply()?;
        if reply.contains("\"error\"") {
            return Err(VmError::Msg(format!("QMP {command}: {}", reply.trim())));
        }
        Ok(reply)
    }

    /// The next line that is not an asynchronous event.
    fn reply(&mut self) -> Result<String, VmError> {
        for _ in 0..1000 {
            let mut line = String::new();
            let n =
                self.stream.read_line(&mut line).map_err(|e| VmError::io("reading from QMP".into(), e))?;
            if n == 0 {
                return Err(VmError::Msg("QEMU closed its QMP socket".into()));
            }
            if !line.contains("\"event\"") {
                return Ok(line);
            }
        }
        Err(VmError::Msg("QMP sent only events".into()))
    }
}
