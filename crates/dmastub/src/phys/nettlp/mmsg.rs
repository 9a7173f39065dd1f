//! Many datagrams per system call (`recvmmsg(2)`, `sendmmsg(2)` with UDP GSO): at NetTLP packet rates the cost of a
//! datagram is mostly the system call, and one request's completions arrive together.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;

/// Most datagrams one call takes.
pub const MAX_BATCH: usize = 32;

/// Room for up to `count` (at most [`MAX_BATCH`]) datagrams of up to `size` bytes each, reused
/// across calls.
pub struct RecvBatch {
    size: usize,
    data: Vec<u8>,
    lens: Vec<usize>,
    /// Each datagram's sender (IPv4; anything else is left unset).
    from: Vec<Option<SocketAddrV4>>,
    filled: usize,
}

impl RecvBatch {
    /// Room for `count` datagrams (clamped to 1 to [`MAX_BATCH`]) of `size` bytes.
    pub fn new(count: usize, size: usize) -> Self {
        let count = count.clamp(1, MAX_BATCH);
        let size = size.max(1);
        RecvBatch {
            size,
            data: vec![0; count * size],
            lens: vec![0; count],
            from: vec![None; count],
            filled: 0,
        }
    }

    /// A placeholder (one 1-byte slot), for swapping a batch out while it is in use.
    pub fn empty() -> Self {
        RecvBatch::new(1, 1)
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
        // SAFETY: mmsghdr and sockaddr_in are plain data; all-zero is a valid value of both.
        let mut headers: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut names: [libc::sockaddr_in; MAX_BATCH] = unsafe { std::mem::zeroed() };
        for ((h, iov), name) in headers.iter_mut().zip(iovecs.iter_mut()).zip(names.iter_mut()).take(count) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = (name as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        // SAFETY: every header points at one iovec, each covering its own `size` bytes of
        // `self.data`, and at its own sockaddr_in of the stated size, all alive for the call;
        // the kernel writes at most `count` headers.
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
        for ((len, from), (h, name)) in
            self.lens.iter_mut().zip(self.from.iter_mut()).zip(headers.iter().zip(&names)).take(self.filled)
        {
            // A datagram longer than the room is cut (MSG_TRUNC); the parser then refuses it.
            *len = (h.msg_len as usize).min(self.size);
            *from = (i32::from(name.sin_family) == libc::AF_INET).then(|| {
                SocketAddrV4::new(u32::from_be(name.sin_addr.s_addr).into(), u16::from_be(name.sin_port))
            });
        }
        Ok(self.filled)
    }

    /// The sender of datagram `i` of the last [`RecvBatch::recv`].
    pub fn sender(&self, i: usize) -> Option<SocketAddrV4> {
        self.from.get(i).copied().flatten().filter(|_| i < self.filled)
    }

    /// Datagram `i` of the last [`RecvBatch::recv`].
    pub fn get(&self, i: usize) -> &[u8] {
        if i >= self.filled {
            return &[];
        }
        &self.data[i * self.size..i * self.size + self.lens[i]]
    }
}

// Sending (the emulator): `sendmmsg(2)` with UDP GSO. Everything handed to the kernel lives on
// the stack or is borrowed for the call, and the kernel only reads it.

/// Most messages one call hands the kernel.
pub const MAX_MESSAGES: usize = 16;
/// Most non-empty slices all the messages of one call are gathered from.
const MAX_PARTS: usize = 160;

/// One message: the concatenation of `parts`, sent as one datagram, or with `segment` cut by
/// the kernel into datagrams of `segment` bytes, the last one possibly shorter (UDP GSO).
pub struct Message<'a> {
    /// The bytes, gathered in order.
    pub parts: &'a [&'a [u8]],
    /// The datagram size the kernel cuts the message into; `None`, one datagram.
    pub segment: Option<u16>,
}

/// A control message holding `UDP_SEGMENT`, laid out as `CMSG_SPACE(2)`.
#[repr(C)]
struct SegmentCmsg {
    hdr: libc::cmsghdr,
    segment: u16,
}

// CMSG_DATA is the header rounded up to the alignment of `cmsghdr` (its `size_t` length).
const _: () = assert!(
    std::mem::offset_of!(SegmentCmsg, segment)
        == std::mem::size_of::<libc::cmsghdr>().next_multiple_of(std::mem::align_of::<libc::cmsghdr>())
);

/// Sends the first messages of `msgs` (as many as one call holds) from `socket` to `to`
/// with one `sendmmsg(2)`: how many the kernel took (at least one), or the error the first
/// one met.
pub fn send(socket: &impl AsRawFd, to: SocketAddrV4, msgs: &[Message<'_>]) -> io::Result<usize> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*to.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_PARTS];
    // SAFETY: cmsghdr is a C struct of integers (and, on some targets, private padding):
    // all zeros is a valid value.
    let mut control: [SegmentCmsg; MAX_MESSAGES] = unsafe { std::mem::zeroed() };
    // Which iovecs each message takes.
    let mut spans = [(0usize, 0usize); MAX_MESSAGES];
    let mut n_iov = 0;
    let mut n = 0;
    for (m, span) in msgs.iter().zip(&mut spans) {
        let parts = m.parts.iter().filter(|p| !p.is_empty());
        if n_iov + parts.clone().count() > MAX_PARTS {
            break;
        }
        let first = n_iov;
        for p in parts {
            // The kernel only reads through iov_base (the type is shared with readv).
            iov[n_iov] = libc::iovec { iov_base: p.as_ptr().cast_mut().cast(), iov_len: p.len() };
            n_iov += 1;
        }
        *span = (first, n_iov - first);
        n += 1;
    }
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a message of too many parts"));
    }
    // SAFETY: mmsghdr is a C struct of integers and pointers: all zeros is a valid value
    // (null pointers, zero lengths, no flags).
    let mut hdrs: [libc::mmsghdr; MAX_MESSAGES] = unsafe { std::mem::zeroed() };
    // Pointers are taken only now that the arrays they point into are no longer written.
    let iov_base = iov.as_mut_ptr();
    for (i, (hdr, &(first, len))) in hdrs.iter_mut().zip(&spans).take(n).enumerate() {
        let h = &mut hdr.msg_hdr;
        h.msg_name = (&raw const addr).cast_mut().cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_iov = iov_base.wrapping_add(first);
        h.msg_iovlen = len as _;
        if let Some(segment) = msgs[i].segment {
            let c = &mut control[i];
            c.hdr.cmsg_level = libc::IPPROTO_UDP; // SOL_UDP
            c.hdr.cmsg_type = libc::UDP_SEGMENT;
            c.hdr.cmsg_len = (std::mem::offset_of!(SegmentCmsg, segment) + 2) as _; // CMSG_LEN(2)
            c.segment = segment;
        }
    }
    let control_base = control.as_mut_ptr();
    for (i, hdr) in hdrs.iter_mut().enumerate().take(n) {
        if msgs[i].segment.is_some() {
            hdr.msg_hdr.msg_control = control_base.wrapping_add(i).cast();
            hdr.msg_hdr.msg_controllen = std::mem::size_of::<SegmentCmsg>() as _; // CMSG_SPACE(2)
        }
    }
    loop {
        // SAFETY: hdrs[..n] are initialised and point only at `addr`, `iov` and `control`,
        // which live on this frame past the call, and through `iov` at slices `msgs`
        // borrows for the call; the kernel reads all of these and writes only the
        // `msg_len` fields of hdrs[..n].
        let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), n as _, 0) };
        if sent > 0 {
            return Ok(sent as usize);
        }
        if sent == 0 {
            // Not for a non-empty vector; if it were, the caller retries later.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
