//! The memory source and address translation the arguments describe.

use crate::cli::{FormatArg, MmuArgs, SourceArgs};
use dmastub::mmu::{MmuConfig, Paging};
use dmastub::phys::nettlp::{NetTlpConfig, NetTlpMem};
use dmastub::phys::{self, Format, OpenOptions, PhysMem, WriteMode};
use std::time::Duration;

pub(crate) fn open_source(
    src: &SourceArgs,
    write: WriteMode,
) -> Result<Box<dyn PhysMem>, Box<dyn std::error::Error>> {
    if let Some(adapter) = src.nettlp {
        let n = &src.nettlp_options;
        let config = NetTlpConfig {
            adapter,
            local: n.nettlp_local,
            requester: n.requester,
            tags: n.tags,
            mrrs: n.mrrs,
            timeout: Duration::from_millis(n.timeout),
            retries: n.retries,
            allow_write: write != WriteMode::ReadOnly,
            tag_generations: !n.plain_tags,
            deadline: match n.deadline {
                Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d.min(1e9))),
                Some(d) => return Err(format!("--deadline {d}: a number of seconds above 0").into()),
                None => None,
            },
        };
        return Ok(Box::new(NetTlpMem::connect(config)?));
    }
    let (path, live) = match (&src.image, &src.live) {
        (Some(p), _) => (p, false),
        (None, Some(p)) => (p, true),
        (None, None) => {
            return Err("give a memory source: --image FILE, --live FILE or --nettlp ADAPTER_IP".into());
        }
    };
    let format = src.format.map(|f| match f {
        FormatArg::Raw => Format::Raw,
        FormatArg::Elf => Format::Elf,
        FormatArg::Lime => Format::Lime,
    });
    Ok(phys::open_file(path, &OpenOptions { live, write, format })?)
}

pub(crate) fn mmu_config(m: &MmuArgs) -> MmuConfig {
    let paging = if m.paging == "5" { Paging::Level5 } else { Paging::Level4 };
    MmuConfig { paging, phys_bits: m.phys_bits }
}
