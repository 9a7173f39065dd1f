use super::*;
use crate::testing::FakeMemory;

const BASE: u64 = 0xffff_ffff_8200_0000;
const TEXT: u64 = 0xffff_ffff_8100_0000;

/// `m` at `BASE`: reads outside it fail.
fn buf(m: Vec<u8>) -> FakeMemory {
    FakeMemory::new().with_region(BASE, m)
}

#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// Before 6.4: offsets, relative_base, num_syms, names, markers, [seqs], tokens.
    /// `wide`: 4.x kernels, whose `num_syms` and markers are `unsigned long` (8 bytes).
    Old { seqs: bool, wide: bool },
    /// From 6.4: num_syms, names, markers, tokens, offsets, relative_base, seqs.
    New,
}

fn align(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(8) {
        v.push(0);
    }
}

/// The symbols: a few per-CPU (absolute, small) then many text symbols, as x86-64 has.
fn symbols(n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = (0..4).map(|i| (format!("Dpercpu_var_{i}"), 0x1000 * i as u64)).collect();
    v.extend((0..n).map(|i| (format!("Tfunction_number_{i}"), TEXT + 0x40 * i as u64)));
    v.push(("Dinit_task".into(), TEXT + 0x40 * n as u64 + 0x1000));
    v
}

/// Tables as scripts/kallsyms writes them (absolute per-CPU encoding), after `pad` bytes of
/// unrelated data.
fn tables(syms: &[(String, u64)], order: Order, pad: usize) -> Vec<u8> {
    // Tokens: each printable byte stands for itself; codes that never occur in names stand
    // for longer strings, as the kernel's compression makes them ("function_" here).
    let token = |i: usize| -> Vec<u8> {
        match i {
            0xf0.. => b"function_".to_vec(),
            0..0x20 => format!("_{i}").into_bytes(),
            _ => vec![i as u8],
        }
    };
    let mut names = Vec::new();
    let mut markers = Vec::new();
    for (i, (n, _)) in syms.iter().enumerate() {
        if i % 256 == 0 {
            markers.push(names.len() as u32);
        }
        let enc: Vec<u8> = n.replace("function_", "\u{f0}").chars().map(|c| c as u32 as u8).collect();
        names.push(enc.len() as u8);
        names.extend(enc);
    }
    let mut tt = Vec::new();
    let mut ti = Vec::new();
    for i in 0..256 {
        ti.push(tt.len() as u16);
        tt.extend(token(i));
        tt.push(0);
    }
    let offsets: Vec<u8> = syms
        .iter()
        .flat_map(|(_, a)| {
            let off = if *a < 0x1_0000_0000 { *a as i32 } else { (TEXT as i64 - 1 - *a as i64) as i32 };
            off.to_le_bytes()
        })
        .collect();
    let num = syms.len() as u32;
    let mut m = vec![0x90u8; pad];
    align(&mut m);
    let push_tokens = |m: &mut Vec<u8>| {
        m.extend(&tt);
        align(m);
        m.extend(ti.iter().flat_map(|v| v.to_le_bytes()));
        align(m);
    };
    let wide = matches!(order, Order::Old { wide: true, .. });
    let push_names = |m: &mut Vec<u8>| {
        if wide {
            m.extend((num as u64).to_le_bytes());
        } else {
            m.extend(num.to_le_bytes());
        }
        align(m);
        m.extend(&names);
        align(m);
        if wide {
            m.extend(markers.iter().flat_map(|&v| (v as u64).to_le_bytes()));
        } else {
            m.extend(markers.iter().flat_map(|v| v.to_le_bytes()));
        }
        align(m);
    };
    match order {
        Order::Old { seqs, .. } => {
            m.extend(&offsets);
            align(&mut m);
            m.extend(TEXT.to_le_bytes());
            push_names(&mut m);
            if seqs {
                m.extend(vec![0x11u8; syms.len() * 3]);
                align(&mut m);
            }
            push_tokens(&mut m);
        }
        Order::New => {
            push_names(&mut m);
            push_tokens(&mut m);
            m.extend(&offsets);
            align(&mut m);
            m.extend(TEXT.to_le_bytes());
            m.extend(vec![0x11u8; syms.len() * 3]);
        }
    }
    m.extend(vec![0u8; 4096]);
    m
}

fn samples(len: usize) -> Vec<u64> {
    (0..len as u64).step_by(SAMPLE_STRIDE as usize).map(|o| BASE + o).collect()
}

#[test]
fn decodes_every_layout() {
    let syms = symbols(40_000);
    for order in [
        Order::Old { seqs: false, wide: true },
        Order::Old { seqs: false, wide: false },
        Order::Old { seqs: true, wide: false },
        Order::New,
    ] {
        for pad in [0, 12_345] {
            let m = tables(&syms, order, pad);
            let len = m.len();
            let k = find(&mut buf(m), &samples(len), BASE..BASE + len as u64).expect("kallsyms");
            assert_eq!(k.len(), syms.len());
            assert_eq!(k.address("init_task"), Some(TEXT + 0x40 * 40_000 + 0x1000));
            assert_eq!(k.address("function_number_39999"), Some(TEXT + 0x40 * 39_999));
            assert_eq!(k.address("percpu_var_3"), Some(0x3000));
            assert_eq!(k.address("function_number_40000"), None);
            assert_eq!(k.lookup(TEXT + 0x40 * 7 + 3), Some(("function_number_7", 3)));
            assert!(k.bytes_read < 4 * len as u64, "read {} of {len}", k.bytes_read);
        }
    }
}

#[test]
fn corrupt_tables_are_refused_with_where() {
    let syms = symbols(20_000);
    let m = tables(&syms, Order::Old { seqs: false, wide: false }, 0);
    let len = m.len();
    let probe = find(&mut buf(m.clone()), &samples(len), BASE..BASE + len as u64).unwrap();
    assert_eq!(probe.table_addr, BASE);
    let mut broken = m.clone();
    // The names start after offsets (4 per symbol), the relative base and num_syms.
    let names = (syms.len() * 4).div_ceil(8) * 8 + 16;
    broken[names] = 0; // an empty name
    let e = find(&mut buf(broken), &samples(len), BASE..BASE + len as u64).expect_err("refused").to_string();
    assert!(e.contains("inconsistent") && e.contains("0x"), "{e}");
    // Nothing but code: not found, and the message says which hint to give.
    let code = vec![0x90u8; 256 * 1024];
    let e =
        find(&mut buf(code), &samples(256 * 1024), BASE..BASE + 256 * 1024).expect_err("refused").to_string();
    assert!(e.contains("--system-map"), "{e}");
    // Cut short: the names run past the region.
    let cut = names + 1000;
    let e = find(&mut buf(m[..cut].to_vec()), &samples(cut), BASE..BASE + cut as u64)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("past") || e.contains("reading"), "{e}");
}

#[test]
fn lookups_on_file_symbols() {
    let k = Kallsyms::from_pairs([
        ("b".to_string(), 0xffff_ffff_8100_0010),
        ("a".into(), 0x20),
        ("b".into(), 0xffff_ffff_8100_0000),
    ]);
    // Duplicate names: the lowest address wins, as kallsyms_lookup_name() does.
    assert_eq!(k.address("b"), Some(0xffff_ffff_8100_0000));
    let slid = k.slid(0x100_0000);
    assert_eq!(slid.address("b"), Some(0xffff_ffff_8200_0000));
    assert_eq!(slid.address("a"), Some(0x20), "per-CPU offsets do not move");
    assert_eq!(Kallsyms::default().address("a"), None);
}

#[test]
fn sizes_run_to_the_next_symbol_at_a_higher_address() {
    let k = Kallsyms::from_pairs([
        ("f".to_string(), 0x1000),
        ("f_alias".into(), 0x1000),
        ("g".into(), 0x1040),
        ("last".into(), 0x2000),
    ]);
    let (name, off, size) = k.lookup_sized(0x1010).unwrap();
    assert!(name.starts_with('f'));
    assert_eq!((off, size), (0x10, Some(0x40)), "an alias does not end its twin");
    assert_eq!(k.lookup_sized(0x1040), Some(("g", 0, Some(0xfc0))));
    assert_eq!(k.lookup_sized(0x2008), Some(("last", 8, None)));
    assert_eq!(k.lookup_sized(0xfff), None);
}
