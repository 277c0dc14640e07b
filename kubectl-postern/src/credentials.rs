//! The token the gateway reviews: the kubeconfig user's own. A `token` or `tokenFile` is read;
//! an exec plugin (the cloud providers' `aws eks get-token`, `gke-gcloud-auth-plugin`,
//! `kubelogin`, ...) is run as client-go runs it (`KUBERNETES_EXEC_INFO`, an ExecCredential on
//! standard output), and its token then also serves the API server, so the plugin runs once.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use kube::config::AuthInfo;
use secrecy::{ExposeSecret, SecretString};

pub fn token(auth: &mut AuthInfo) -> anyhow::Result<String> {
    if let Some(t) = &auth.token {
        return Ok(t.expose_secret().to_string());
    }
    if let Some(file) = &auth.token_file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("the kubeconfig's tokenFile {file}"))?;
        return Ok(text.trim().to_string());
    }
    if let Some(exec) = &auth.exec {
        let command = exec.command.as_deref().context("the kubeconfig's exec plugin has no command")?;
        let api_version = exec.api_version.as_deref().unwrap_or("client.authentication.k8s.io/v1");
        let mut cmd = Command::new(command);
        cmd.args(exec.args.iter().flatten())
            .env(
                "KUBERNETES_EXEC_INFO",
                serde_json::json!({"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": false}}).to_string(),
            )
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        for pair in exec.env.iter().flatten() {
            if let (Some(name), Some(value)) = (pair.get("name"), pair.get("value")) {
                cmd.env(name, value);
            }
        }
        let out = cmd.output().with_context(|| format!("running the kubeconfig's exec plugin {command}"))?;
        if !out.status.success() {
            bail!("the kubeconfig's exec plugin {command} failed ({})", out.status);
        }
        let credential: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("the ExecCredential of {command}"))?;
        let Some(token) = credential["status"]["token"].as_str() else {
            bail!(
                "the exec plugin {command} gave a client certificate, not a token: pass --token (e.g. from `kubectl create token`)"
            );
        };
        auth.token = Some(SecretString::from(token.to_string()));
        auth.exec = None;
        return Ok(token.to_string());
    }
    bail!(
        "this kubeconfig's user has no token for the gateway to review (a client certificate?): pass --token or set POSTERN_TOKEN (e.g. `kubectl create token NAME`)"
    )
}
