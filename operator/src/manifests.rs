//! Reading Kubernetes manifests from files (`render -f DIR`, tests, GitOps previews): every
//! `.yaml`/`.yml` file under a directory, multi-document, sorted into the kinds rendering needs.
//! Other kinds are skipped.

use std::path::Path;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;

use crate::crd::{Gateway, MailDomain, RoutingPolicy, SendingAccount, SpamPolicy};

/// The objects rendering looks at, as read from the cluster or from files.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub gateways: Vec<Gateway>,
    pub domains: Vec<MailDomain>,
    pub routing_policies: Vec<RoutingPolicy>,
    pub spam_policies: Vec<SpamPolicy>,
    pub accounts: Vec<SendingAccount>,
    pub config_maps: Vec<ConfigMap>,
}

impl Objects {
    /// Reads every manifest under `dir` (recursively). A namespace-less object lands in
    /// `default_namespace`, as `kubectl apply -n` would put it.
    pub fn from_dir(dir: &Path, default_namespace: &str) -> anyhow::Result<Self> {
        let mut files = Vec::new();
        collect(dir, &mut files)?;
        files.sort();
        let mut out = Objects::default();
        for file in files {
            let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
            out.add_yaml(&text, default_namespace).with_context(|| format!("{}", file.display()))?;
        }
        Ok(out)
    }

    /// Adds the objects of one (multi-document) YAML text.
    pub fn add_yaml(&mut self, text: &str, default_namespace: &str) -> anyhow::Result<()> {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc).with_context(|| format!("document {}", i + 1))?;
            if value.is_null() {
                continue;
            }
            let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
            let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
            let what = || format!("document {} ({kind})", i + 1);
            macro_rules! push {
                ($list:expr) => {{
                    let mut obj = serde_path_to_error::deserialize(value.clone()).with_context(what)?;
                    set_namespace(&mut obj, default_namespace);
                    $list.push(obj)
                }};
            }
            match (api_version, kind) {
                (crate::crd::API_VERSION, "Gateway") => push!(self.gateways),
                (crate::crd::API_VERSION, "MailDomain") => push!(self.domains),
                (crate::crd::API_VERSION, "RoutingPolicy") => push!(self.routing_policies),
                (crate::crd::API_VERSION, "SpamPolicy") => push!(self.spam_policies),
                (crate::crd::API_VERSION, "SendingAccount") => push!(self.accounts),
                ("v1", "ConfigMap") => push!(self.config_maps),
                (v, k) if v.starts_with("mail.postern.dev/") => bail!("{}: unknown kind {k} in {v}", what()),
                _ => {}
            }
        }
        Ok(())
    }
}

fn set_namespace<K: kube::Resource>(obj: &mut K, default: &str) {
    let meta = obj.meta_mut();
    if meta.namespace.is_none() {
        meta.namespace = Some(default.to_string());
    }
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}
