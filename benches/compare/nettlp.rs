//! NetTLP reads: dmastub's client against libtlp's `tlpperf`.

use super::*;

pub(super) fn compare_nettlp(fx: &Fixture) -> Comparison {
    let mut c = Comparison::new("NetTLP reads over loopback");
    println!("\n== 3. {} ==", c.title);
    let Some(tlpperf) = rates::tlpperf_path() else {
        c.skip(
            "libtlp's tlpperf not found: build libtlp and its apps (https://github.com/NetTLP/libtlp, outside \
             this repository) and set LIBTLP_BIN to the folder holding tlpperf (or LIBTLP_TLPPERF to tlpperf)"
                .into(),
        );
        return c;
    };
    let emulator = Emulator::start(fx.raw.to_str().expect("UTF-8 path"), &LINK.adapter.to_string());
    let pid = emulator.pid();
    println!(
        "  emulator at {} serving the raw image; tlpperf -N 1 (one read at a time, {TLPPERF_SECONDS} s), \
         dmastub MRRS 2048 like tlpperf's requests ({NETTLP_RUN:?}); median of {NETTLP_ROUNDS} rounds (and their range)",
        LINK.adapter
    );
    let mut data = serde_json::Map::new();
    // tlpperf's own request size; smaller reads are in `cargo bench --bench nettlp`.
    for size in [2048usize] {
        let reads = rates::Reads { start: DUMP_PHYS, region: 32 * MIB, size };
        // dmastub with 16 tags, with 1, and tlpperf, interleaved.
        let mut runs: [Vec<rates::Rate>; 3] = Default::default();
        for _ in 0..NETTLP_ROUNDS {
            runs[0].push(rates::dmastub_rate(LINK, reads, 16, 2048, NETTLP_RUN, pid));
            runs[2].extend(rates::tlpperf_rate(&tlpperf, LINK, reads, TLPPERF_SECONDS, pid));
            runs[1].push(rates::dmastub_rate(LINK, reads, 1, 2048, NETTLP_RUN, pid));
        }
        if runs[2].is_empty() {
            c.skip(format!("tlpperf ({tlpperf}) printed no rates at {size} B"));
            continue;
        }
        let mb: Vec<Vec<f64>> = runs.iter().map(|v| v.iter().map(|r| r.mb_per_s).collect()).collect();
        // The emulator's CPU use meanwhile: near 100% means it, not the client, set the pace.
        let cpu: Vec<Vec<f64>> = runs.iter().map(|v| v.iter().map(|r| r.emulator_cpu).collect()).collect();
        let (ours16, ours1, peer) = (median(&mb[0]), median(&mb[1]), median(&mb[2]));
        let spread = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            format!("{lo:.0}-{hi:.0}")
        };
        println!(
            "  {size:>5} B reads, MB/s: dmastub 16 tags {ours16:>6.1} ({}), 1 tag {ours1:>6.1} ({}); tlpperf {peer:>6.1} ({})",
            spread(&mb[0]),
            spread(&mb[1]),
            spread(&mb[2])
        );
        println!(
            "  emulator CPU meanwhile (median): {:.0}% / {:.0}% / {:.0}%",
            median(&cpu[0]) * 100.0,
            median(&cpu[1]) * 100.0,
            median(&cpu[2]) * 100.0
        );
        data.insert(
            format!("{size}"),
            json!({"dmastub_16_tags_mb_per_s": ours16, "dmastub_1_tag_mb_per_s": ours1, "tlpperf_mb_per_s": peer,
                   "runs": {"dmastub_16_tags": mb[0], "dmastub_1_tag": mb[1], "tlpperf": mb[2]},
                   "emulator_cpu": {"dmastub_16_tags": cpu[0], "dmastub_1_tag": cpu[1], "tlpperf": cpu[2]}}),
        );
        for (tags, ours) in [(16, ours16), (1, ours1)] {
            c.figures.push(Figure {
                label: format!(
                    "{size} B reads, {tags} tag{} vs tlpperf: MB/s",
                    if tags > 1 { "s" } else { "" }
                ),
                ratio: ours / peer,
                sense: "more MB/s",
                peer: "tlpperf".into(),
                ours: format!("{ours:.1} MB/s"),
                theirs: format!("{peer:.1} MB/s"),
                target: None,
            });
        }
    }
    c.caption = Some(format!(
        "one dmastub nettlp-emulator on loopback; libtlp's tlpperf -N 1 against dmastub's client, MRRS 2048, \
         median of {NETTLP_ROUNDS}"
    ));
    c.data = Value::Object(data);
    drop(emulator);
    c
}
