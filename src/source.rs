//! The memory source and address translation the arguments describe.

use crate::cli::{FormatArg, MmuArgs, SourceArgs};
use dmastub::mmu::{MmuConfig, Paging};
use dmastub::phys::nettlp::{NetTlpConfig, NetTlpMem};
use dmastub::phys::{self, Format, NetTlpSetting, OpenOptions, PhysMem, Remedy, WriteMode};
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
        let mem = NetTlpMem::connect(config).map_err(|e| {
            let remedy = e.remedy();
            with_remedy(e, remedy)
        })?;
        return Ok(Box::new(mem));
    }
    let (path, live) = match (&src.image, &src.live) {
        (Some(p), _) => (p, false),
        (None, Some(p)) => (p, true),
        (None, None) => {
            return Err("give a memory source: --image FILE, --live FILE or --nettlp ADAPTER_IP".into());
        }
    };
    let format = src.image_format.map(|f| match f {
        FormatArg::Raw => Format::Raw,
        FormatArg::Elf => Format::Elf,
        FormatArg::Lime => Format::Lime,
    });
    phys::open_file(path, &OpenOptions { live, write, format }).map_err(|e| {
        let remedy = e.remedy();
        with_remedy(e, remedy)
    })
}

/// The library's error, with what it says to change put as this command line's flags.
pub(crate) fn with_remedy(
    e: impl std::error::Error + 'static,
    remedy: Option<Remedy>,
) -> Box<dyn std::error::Error> {
    let hint = match remedy {
        Some(Remedy::AllowWrite) => "start the server with --allow-write to change memory",
        Some(Remedy::ForceRawFormat) => "pass --image-format raw to read it anyway",
        Some(Remedy::NetTlp(NetTlpSetting::Local)) => "--nettlp-local must be an address of this machine",
        Some(Remedy::NetTlp(NetTlpSetting::Tags)) => "see --tags",
        Some(Remedy::NetTlp(NetTlpSetting::Mrrs)) => "see --mrrs",
        Some(Remedy::NetTlp(NetTlpSetting::Timeout)) => "see --timeout",
        Some(Remedy::NetTlp(NetTlpSetting::Retries)) => "see --retries",
        Some(Remedy::NetTlp(NetTlpSetting::Deadline)) => "see --deadline",
        _ => return Box::new(e),
    };
    format!("{e}; {hint}").into()
}

pub(crate) fn mmu_config(m: &MmuArgs) -> MmuConfig {
    let paging = if m.paging == "5" { Paging::Level5 } else { Paging::Level4 };
    MmuConfig { paging, phys_bits: m.phys_bits }
}
