//! Reading the config file. The types and checks live in `postern-api`.

use std::path::Path;

use anyhow::Context;
use postern_api::GatewayConfig;

/// Reads and checks a GatewayConfig file. The error names the file, the field and the problem.
pub fn load_file(path: &Path) -> anyhow::Result<GatewayConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(postern_api::load_gateway_config(&text)?)
}
