//! The gateway's config: reading the file (the types and checks live in `postern-api`) and
//! the loaded snapshot with its indexes (`snapshot.rs`).

mod snapshot;

pub use snapshot::{ConfigSnapshot, NamedSpamPolicy, ServedDomain, canonical_ip};

use std::path::Path;

use anyhow::Context;
use postern_api::GatewayConfig;

/// Reads and checks a GatewayConfig file. The error names the file, the field and the problem.
pub fn load_file(path: &Path) -> anyhow::Result<GatewayConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(postern_api::load_gateway_config(&text)?)
}
