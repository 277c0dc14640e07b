//! postern-api: the data Postern is configured with. Pure data and validation, no I/O, so the
//! gateway, the operator and the tests share one definition of every field.

pub mod config;
pub mod duration;
pub mod validate;

pub use config::*;
pub use duration::HumanDuration;
pub use validate::{ConfigError, FieldError, load_gateway_config, validate};

/// The JSON schema of `GatewayConfig`, for documentation and editors.
pub fn gateway_config_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(GatewayConfig)).expect("a schema serialises")
}
