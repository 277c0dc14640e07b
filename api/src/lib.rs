//! postern-api: the data Postern is configured with. Pure data and validation, no I/O, so the
//! gateway, the operator and the tests share one definition of every field.

pub mod accounts;
pub mod admin;
pub mod config;
pub mod duration;
pub mod mta_sts;
pub mod relay;
pub mod spam;
pub mod submission;
pub mod validate;

pub use accounts::{
    AccountType, DirectAccount, DkimAlgorithm, ExchangeAccount, OAuthAccount, OAuthEndpoints, OAuthGrant,
    OAuthSend, SendingAccount, SmtpAccount, SmtpSecurity,
};
pub use config::*;
pub use duration::HumanDuration;
pub use mta_sts::{MtaSts, MtaStsMode};
pub use relay::{
    CheckAction, ConnectionPolicy, ExternalPostmaster, RelayAction, RelayConfig, RelayRule, SenderPolicy,
};
pub use spam::{Action, SpamPolicyConfig};
pub use submission::{AuthConfig, FailedLogins, ListenerRole, RateCount, RateKey, RateLimit};
pub use validate::{ConfigError, FieldError, load_gateway_config, validate};

/// The JSON schema of `GatewayConfig`, for documentation and editors.
pub fn gateway_config_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(GatewayConfig)).expect("a schema serialises")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_schema_documents_every_field() {
        let schema = super::gateway_config_schema();
        let props = &schema["properties"];
        for field in
            ["hostname", "listeners", "admin", "store", "limits", "relay", "domains", "delivery", "logging"]
        {
            assert!(props[field].is_object(), "{field} missing from the schema");
            assert!(props[field]["description"].is_string(), "{field} has no description");
        }
        assert_eq!(schema["required"], serde_json::json!(["hostname", "listeners"]));
    }
}
