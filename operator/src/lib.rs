//! postern-operator: the CRDs (`crd`), rendering the resources that select a Gateway into one
//! `GatewayConfig` (`render`), and reading manifests from files for offline rendering
//! (`manifests`).

pub mod addons;
pub mod controller;
pub mod crd;
pub mod generated_secrets;
pub mod http;
pub mod leader;
pub mod manifests;
pub mod render;
pub mod resources;
pub mod telemetry;
