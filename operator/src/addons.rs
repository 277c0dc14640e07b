//! Objects of other projects' kinds a Gateway may own: the Prometheus Operator's
//! ServiceMonitor, cert-manager's Certificate, external-dns's DNSEndpoint. Each is applied only
//! where its CRD is installed (a cluster without cert-manager is not an error, it is a
//! condition), and the Gateway's objects of the kind it no longer asks for are deleted.

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

use crate::crd::Gateway;
use crate::resources::MANAGER;

pub struct AddOn {
    /// The CRD's name, `<plural>.<group>`.
    pub crd: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
}

pub const SERVICE_MONITOR: AddOn = AddOn {
    crd: "servicemonitors.monitoring.coreos.com",
    group: "monitoring.coreos.com",
    version: "v1",
    kind: "ServiceMonitor",
    plural: "servicemonitors",
};

pub const CERTIFICATE: AddOn = AddOn {
    crd: "certificates.cert-manager.io",
    group: "cert-manager.io",
    version: "v1",
    kind: "Certificate",
    plural: "certificates",
};

pub const DNS_ENDPOINT: AddOn = AddOn {
    crd: "dnsendpoints.externaldns.k8s.io",
    group: "externaldns.k8s.io",
    version: "v1alpha1",
    kind: "DNSEndpoint",
    plural: "dnsendpoints",
};

impl AddOn {
    fn api(&self, client: &Client, ns: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(self.group, self.version, self.kind);
        Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk_with_plural(&gvk, self.plural))
    }

    pub async fn installed(&self, client: &Client) -> Result<bool, kube::Error> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        Ok(Api::<CustomResourceDefinition>::all(client.clone()).get_opt(self.crd).await?.is_some())
    }

    /// Applies `wanted` and deletes the Gateway's other objects of this kind. `None`: the kind
    /// is not installed (nothing applied); otherwise the objects as the API server returned them
    /// (with their status).
    pub async fn reconcile(
        &self,
        client: &Client,
        ns: &str,
        gw: &Gateway,
        wanted: &[Value],
    ) -> Result<Option<Vec<DynamicObject>>, kube::Error> {
        if !self.installed(client).await? {
            return Ok(None);
        }
        let api = self.api(client, ns);
        let params = PatchParams::apply(MANAGER).force();
        let mut applied = Vec::new();
        for obj in wanted {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            applied.push(api.patch(name, &params, &Patch::Apply(obj)).await?);
        }
        let selector =
            format!("app.kubernetes.io/managed-by={MANAGER},app.kubernetes.io/instance={}", gw.name_any());
        for existing in api.list(&ListParams::default().labels(&selector)).await? {
            let name = existing.name_any();
            let ours = existing
                .owner_references()
                .iter()
                .any(|r| r.controller == Some(true) && Some(&r.uid) == gw.meta().uid.as_ref());
            if ours && !wanted.iter().any(|w| w["metadata"]["name"] == name.as_str()) {
                api.delete(&name, &DeleteParams::background()).await?;
                tracing::info!(kind = self.kind, %name, "deleted: the Gateway no longer asks for it");
            }
        }
        Ok(Some(applied))
    }
}

/// `Ready` of an object's status conditions: (is True, its message).
pub fn ready(obj: &DynamicObject) -> (bool, String) {
    let conditions = obj.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
    match conditions.iter().find(|c| c["type"] == "Ready") {
        Some(c) => (c["status"] == "True", c["message"].as_str().unwrap_or_default().to_string()),
        None => (false, "not issued yet".into()),
    }
}
