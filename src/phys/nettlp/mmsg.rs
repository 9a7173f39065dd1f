//! Many datagrams per system call (`recvmmsg(2)`): at NetTLP packet rates the cost of a
//! datagram is mostly the system call, and one request's completions arrive together.

use std::io;
use std::os::fd::AsRawFd;

/// Most datagrams one call takes.
pub const MAX_BATCH: usize = 32;

/// Room for up to `count` (at most [`MAX_BATCH`]) datagrams of up to `size` bytes each, reused
/// across calls.
#[derive(Default)]
pub struct RecvBatch {
    size: usize,
    data: Vec<u8>,
    lens: Vec<usize>,
    filled: usize,
}

impl RecvBatch {
    pub fn new(count: usize, size: usize) -> Self {
        let count = count.clamp(1, MAX_BATCH);
        RecvBatch { size, data: vec![0; count * size], lens: vec![0; count], filled: 0 }
    }

    /// How many datagrams one call can take.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Takes what is queued on `socket` without waiting, up to the batch's room. Returns how
    /// many datagrams came (0 when none was queued).
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let count = self.lens.len();
        let empty = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        let mut iovecs = [empty; MAX_BATCH];
        for (iov, c) in iovecs.iter_mut().zip(self.data.chunks_exact_mut(self.size)) {
            *iov = libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: c.len() };
        }
        // SAFETY: mmsghdr is plain data; all-zero is a valid value (no name, no control).
        let mut headers: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        for (h, iov) in headers.iter_mut().zip(iovecs.iter_mut()).take(count) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at one iovec, each covering its own `size` bytes of
        // `self.data`, all alive for the call; the kernel writes at most `count` headers.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.filled = 0;
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        self.filled = n as usize;
        for (len, h) in self.lens.iter_mut().zip(&headers[..self.filled]) {
            // A datagram longer than the room is cut (MSG_TRUNC); the parser then refuses it.
            *len = (h.msg_len as usize).min(self.size);
        }
        Ok(self.filled)
    }

    /// Datagram `i` of the last [`RecvBatch::recv`].
    pub fn get(&self, i: usize) -> &[u8] {
        if i >= self.filled {
            return &[];
        }
        &self.data[i * self.size..i * self.size + self.lens[i]]
    }
}
