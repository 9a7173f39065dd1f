//! Finding the kernel with no hints: `dmastub kernel` against drgn.

use super::*;

pub(super) fn compare_discovery(fx: &Fixture) -> Comparison {
    let mut c = Comparison::new("knowing the kernel");
    println!("\n== 4. {} ==", c.title);
    let kernel = |image: &Path| {
        let mut cmd = Command::new(BIN);
        cmd.args(["kernel", "--image"]).arg(image);
        cmd
    };
    let script = "print(prog['init_uts_ns'].name.release.string_().decode())";
    let vmlinux = dwarf_vmlinux();
    let drgn_ok = vmlinux.is_some() && have_drgn();
    if !drgn_ok {
        c.skip(
            "drgn (on PATH) and DMASTUB_DWARF_VMLINUX are needed for the peer: \
             eval \"$(tools/setup-full-tests.sh)\""
                .into(),
        );
    }
    let mut runs: [Vec<Measured>; 3] = Default::default();
    let mut read_bytes = [0u64; 2];
    for _ in 0..DISCOVERY_ROUNDS {
        for (i, image) in [&fx.raw, &fx.elf].into_iter().enumerate() {
            let m = measure(&mut kernel(image), "");
            if !m.stdout.contains(&fx.release) {
                c.skip(format!(
                    "dmastub kernel --image {} did not find {}: {}",
                    image.display(),
                    fx.release,
                    m.stderr
                ));
                return c;
            }
            read_bytes[i] = m
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("discovery read ")?.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            runs[i].push(m);
        }
        if let (true, Some(v)) = (drgn_ok, &vmlinux) {
            let m = measure(&mut drgn_command(&fx.elf, v, script), "");
            if m.stdout.trim() != fx.release {
                c.skip(format!("drgn printed {:?}, not the release {}", m.stdout.trim(), fx.release));
                return c;
            }
            runs[2].push(m);
        }
    }
    let mut data = serde_json::Map::new();
    let ours = [stats(&runs[0]), stats(&runs[1])];
    for (i, what) in ["raw", "elf"].into_iter().enumerate() {
        let frac = read_bytes[i] as f64 / fx.ram as f64;
        ours[i].print(&format!("dmastub kernel --image post-panic.{what}"));
        println!(
            "    read {:.2} MiB of target memory = {:.2}% of its {} MiB RAM",
            read_bytes[i] as f64 / MIB as f64,
            frac * 100.0,
            fx.ram / MIB
        );
        let mut j = ours[i].json();
        j["bytes_read"] = json!(read_bytes[i]);
        j["fraction_of_ram"] = json!(frac);
        data.insert(format!("dmastub_{what}"), j);
    }
    c.caption = Some(format!(
        "dmastub kernel, no hints: read {:.1} MiB = {:.1}% of the {} MiB RAM (raw image) in {}; \
         drgn: ELF core + DWARF vmlinux, prints the release",
        read_bytes[0] as f64 / MIB as f64,
        read_bytes[0] as f64 / fx.ram as f64 * 100.0,
        fx.ram / MIB,
        ms(ours[0].wall)
    ));
    if !runs[2].is_empty() {
        let theirs = stats(&runs[2]);
        theirs.print("drgn -c post-panic.elf -s vmlinux (release)");
        data.insert("drgn".into(), theirs.json());
        // The same file for both: the ELF core.
        c.figures.extend(ours[1].against(&theirs, "kernel, no hints,", "drgn", [None, None]));
    }
    c.data = Value::Object(data);
    c
}
