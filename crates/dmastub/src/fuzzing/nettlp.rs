//! The NetTLP client against a scripted fake adapter that answers with fuzzed completions.

use super::*;

/// The byte an adapter returns for physical address `a` (so any byte out of place shows).
fn pattern(a: u64) -> u8 {
    (a ^ (a >> 8) ^ (a >> 17)).wrapping_mul(0x9d) as u8 ^ 0x5a
}

/// How the fake adapter answers: one action per request, in turn.
#[derive(Default)]
struct Script {
    open: bool,
    /// The client of this input: requests from an earlier input's client (a late one still
    /// queued at the adapter) go unanswered, as they would from any other host.
    client: Option<Ipv4Addr>,
    actions: Vec<[u8; 4]>,
    garbage: Vec<u8>,
    next: usize,
}

struct FakeAdapter {
    adapter: Ipv4Addr,
    /// 127.X.Y.0: each input's client takes the next address in it.
    local: [u8; 3],
    script: Arc<Mutex<Script>>,
}

/// Loopback addresses of our own (127.X.Y.2 for the adapter, others for the clients), so that
/// parallel processes and the project's NetTLP tests never share a port.
fn fake_adapter() -> &'static FakeAdapter {
    static ADAPTER: OnceLock<FakeAdapter> = OnceLock::new();
    ADAPTER.get_or_init(|| {
        let pid = std::process::id();
        let x = 100 + (pid % 100) as u8;
        let y = (pid / 100) as u8;
        let adapter = Ipv4Addr::new(127, x, y, 2);
        let local = [127, x, y];
        let script = Arc::new(Mutex::new(Script::default()));
        for tag in 0..wire::MAX_TAGS {
            let sock = UdpSocket::bind(SocketAddrV4::new(adapter, wire::port_for_tag(tag)))
                .expect("fuzzing: bind the fake NetTLP adapter");
            let script = script.clone();
            std::thread::spawn(move || serve_fake(sock, script));
        }
        FakeAdapter { adapter, local, script }
    })
}

fn serve_fake(sock: UdpSocket, script: Arc<Mutex<Script>>) {
    let mut buf = vec![0u8; wire::MAX_DATAGRAM + 64];
    let mut out = Vec::new();
    loop {
        let Ok((n, std::net::SocketAddr::V4(from))) = sock.recv_from(&mut buf) else { continue };
        let Ok(Tlp::MemRead(req)) = wire::parse(&buf[..n]) else { continue };
        // Answers are sent with the script locked, so none outlives its input.
        let mut s = script.lock().unwrap_or_else(|e| e.into_inner());
        if !s.open || s.client != Some(*from.ip()) {
            continue;
        }
        let action = if s.actions.is_empty() { [0; 4] } else { s.actions[s.next % s.actions.len()] };
        s.next += 1;
        for d in answers(&req, action, &s.garbage, &mut out) {
            let _ = sock.send_to(d, from);
        }
    }
}

/// One completion of `n` bytes from the request's byte `start`, its fields changed by `fields`
/// (byte count + `fields[0] & 0xf`, requester and tag xor `fields[1]`, lower address xor
/// `fields[2]`). The payload is what the machine holds where the completion's own fields say its
/// bytes go, so a client that puts them there gets the machine's bytes whatever it accepts.
fn completion(req: &MemRequest, start: u32, n: u32, fields: [u8; 3], out: &mut Vec<u8>) {
    let byte_count = ((req.len - start) as u16).saturating_add(u16::from(fields[0] & 0xf)).min(4096);
    let claimed = (req.addr + u64::from(req.len)).wrapping_sub(u64::from(byte_count));
    let lower_addr = (claimed as u8 ^ fields[2]) & 0x7f;
    let skip = u64::from(lower_addr & 3);
    let dws = (skip + u64::from(n)).div_ceil(4);
    let payload: Vec<u8> =
        (0..dws * 4).map(|i| pattern(claimed.wrapping_sub(skip).wrapping_add(i))).collect();
    let c = Completion {
        completer: RequesterId(0x0100),
        status: CplStatus::Success,
        byte_count,
        requester: RequesterId(req.requester.0 ^ u16::from(fields[1] >> 4)),
        tag: req.tag ^ (fields[1] & 0xf),
        lower_addr,
        payload: &payload,
    };
    wire::encode_completion(&c, out);
}

/// The datagrams answering `req` under `action` (kind, then three parameters).
fn answers<'a>(req: &MemRequest, action: [u8; 4], garbage: &[u8], out: &'a mut Vec<u8>) -> Vec<&'a [u8]> {
    out.clear();
    let mut ends = Vec::new();
    let [kind, p1, p2, p3] = action;
    let piece = (u32::from(p1 & 0x1f) + 1) * 4;
    let pieces = |len: u32| -> Vec<(u32, u32)> {
        let mut v = Vec::new();
        let mut s = 0;
        while s < len {
            let n = piece.min(len - s);
            v.push((s, n));
            s += n;
        }
        v
    };
    let emit = |out: &mut Vec<u8>, ends: &mut Vec<usize>, start: u32, n: u32, fields: [u8; 3]| {
        completion(req, start, n, fields, out);
        ends.push(out.len());
    };
    match kind % 9 {
        0 => emit(out, &mut ends, 0, req.len, [0; 3]),
        1 => pieces(req.len).into_iter().for_each(|(s, n)| emit(out, &mut ends, s, n, [0; 3])),
        2 => pieces(req.len).into_iter().rev().for_each(|(s, n)| emit(out, &mut ends, s, n, [0; 3])),
        3 => pieces(req.len).into_iter().for_each(|(s, n)| {
            emit(out, &mut ends, s, n, [0; 3]);
            emit(out, &mut ends, s, n.min(u32::from(p2) + 1), [0; 3]);
        }),
        4 => {} // no answer: the client times out and sends again
        5 => {
            let status = [CplStatus::UnsupportedRequest, CplStatus::CompleterAbort][usize::from(p1 & 1)];
            let c = Completion {
                completer: RequesterId(0x0100),
                status,
                byte_count: req.len as u16,
                requester: req.requester,
                tag: req.tag,
                lower_addr: req.addr as u8 & 0x7f,
                payload: &[],
            };
            wire::encode_completion(&c, out);
            ends.push(out.len());
        }
        6 => {
            // Fields that do not fit the request, then the right answer.
            let start = u32::from(p3) % req.len;
            emit(out, &mut ends, start, req.len - start, [p2 | 1, p1, p3]);
            emit(out, &mut ends, 0, req.len, [0; 3]);
        }
        7 => {
            out.extend_from_slice(garbage);
            ends.push(out.len());
            emit(out, &mut ends, 0, req.len, [0; 3]);
        }
        _ => {
            // A payload shorter than its byte count says: only part of the request.
            let n = (u32::from(p1) * 4).min(req.len);
            emit(out, &mut ends, 0, n, [0; 3]);
            if n < req.len {
                emit(out, &mut ends, n, req.len - n, [0; 3]);
            }
        }
    }
    let mut v = Vec::with_capacity(ends.len());
    let mut rest: &'a [u8] = out;
    let mut prev = 0;
    for e in ends {
        let (d, r) = rest.split_at(e - prev);
        v.push(d);
        rest = r;
        prev = e;
    }
    v
}

/// The input as one datagram for the parser (first byte even), or as a read through the real
/// NetTLP client from a fake adapter on the loopback that answers as the input says (odd):
/// split, reordered, duplicated, dropped, errors, fields that fit no request, garbage. A read
/// that succeeds must hold exactly the machine's bytes.
pub fn nettlp(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    if mode & 1 == 0 {
        if let Ok(Tlp::Completion(c)) = wire::parse(input.0) {
            let _ = c.data();
            let mut out = Vec::new();
            wire::encode_completion(&c, &mut out);
            // A completion encodes back to a datagram that parses to the same completion.
            assert_eq!(wire::parse(&out), Ok(Tlp::Completion(c)), "completion round trip");
        } else if let Ok(Tlp::MemRead(r)) = wire::parse(input.0) {
            let mut out = Vec::new();
            wire::encode_read(&r, &mut out);
        }
        return;
    }
    let (tags, mrrs, retries) = (input.u8(), input.u8(), input.u8());
    let mut segs: Vec<(u64, usize)> = Vec::new();
    for _ in 0..1 + (mode >> 1) % 3 {
        let addr = u64::from(input.u32()) << (input.u8() % 20);
        let len = usize::from(input.u16() % 8193);
        segs.push((addr, len));
    }
    let glen = usize::from(input.u8());
    let garbage = input.0[..glen.min(input.0.len())].to_vec();
    input.0 = &input.0[garbage.len()..];
    let actions: Vec<[u8; 4]> = input.0.chunks_exact(4).take(64).map(|c| [c[0], c[1], c[2], c[3]]).collect();

    let fake = fake_adapter();
    static CLIENTS: AtomicU64 = AtomicU64::new(0);
    let [a, b, c] = fake.local;
    let local = Ipv4Addr::new(a, b, c, 10 + (CLIENTS.fetch_add(1, Ordering::Relaxed) % 240) as u8);
    let config = NetTlpConfig {
        adapter: fake.adapter,
        local,
        tags: 1 + tags % wire::MAX_TAGS,
        mrrs: 128 << (mrrs % 6),
        timeout: Duration::from_millis(2),
        retries: u32::from(retries % 3),
        ..NetTlpConfig::default()
    };
    let Ok(mut mem) = NetTlpMem::connect(config) else { return };
    *fake.script.lock().unwrap_or_else(|e| e.into_inner()) =
        Script { open: true, client: Some(local), actions, garbage, next: 0 };
    let mut bufs: Vec<Vec<u8>> = segs.iter().map(|&(_, len)| vec![0u8; len]).collect();
    let mut segments: Vec<Segment> =
        segs.iter().zip(bufs.iter_mut()).map(|(&(a, _), b)| Segment { addr: PhysAddr(a), buf: b }).collect();
    let result = mem.read_segments(&mut segments);
    fake.script.lock().unwrap_or_else(|e| e.into_inner()).open = false;
    let good = match &result {
        Ok(()) => segs.len(),
        Err(e) => e.index,
    };
    for (i, (&(addr, _), buf)) in segs.iter().zip(&bufs).enumerate().take(good) {
        for (j, &b) in buf.iter().enumerate() {
            let a = addr + j as u64;
            assert_eq!(b, pattern(a), "segment {i}: byte at phys {a:#x} is not the machine's ({result:?})");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The remote protocol: gdbstub over an in-memory connection, with the real target.
