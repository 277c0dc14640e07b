//! `kubectl postern` (installed as `kubectl-postern` on the PATH): a Gateway's quarantine,
//! destination verification and sending accounts, with the user's kubeconfig.
//!
//! Requests go to the Gateway's admin Service through the Kubernetes API server's service
//! proxy (`/api/v1/namespaces/NS/services/http:GW-admin:admin/proxy/...`), so nothing needs
//! a port-forward or an Ingress, and RBAC decides twice: the API server lets the user reach
//! the Service (`services/proxy` in the namespace: `get` for reading, `create` for POST,
//! `delete` for DELETE), and the gateway asks it (TokenReview, SubjectAccessReview) whether
//! the user may do the request's verb on `quarantine`, `verifications` or `accounts` of
//! `mail.postern.dev`. The API server drops `Authorization` before it forwards a request, so
//! the user's token also travels in `X-Postern-Token`. A kubeconfig user that logs in with a
//! client certificate has no token to show the gateway: `--token` (or `POSTERN_TOKEN`) gives one.

mod credentials;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use postern_admin_client::cli::{AccountsCommand, QuarantineCommand, VerificationCommand};
use postern_admin_client::{AdminClient, Call, RawAnswer};

#[derive(Parser)]
#[command(
    name = "kubectl-postern",
    bin_name = "kubectl postern",
    version,
    about = "Postern's quarantine, destination verification and sending accounts, through the Kubernetes API server"
)]
struct Cli {
    /// The Gateway's namespace (default: the kubeconfig context's).
    #[arg(long, short = 'n', global = true)]
    namespace: Option<String>,
    /// The Gateway (default: the only one in the namespace).
    #[arg(long, short = 'g', global = true)]
    gateway: Option<String>,
    /// The kubeconfig context (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The token the gateway reviews (default: the kubeconfig user's token, token file or exec
    /// plugin).
    #[arg(long, global = true, env = "POSTERN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The quarantine: list (search), show, release, delete.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineCommand,
    },
    /// Destination verification of routing policies: list, retry.
    Verification {
        #[command(subcommand)]
        action: VerificationCommand,
    },
    /// Sending accounts: list, test, confirm, send-confirmation, authorize.
    Accounts {
        #[command(subcommand)]
        action: AccountsCommand,
    },
}

const GROUP_VERSION: &str = "mail.postern.dev/v1alpha1";

/// The only Gateway in `namespace`, or an error naming the ones there are.
async fn only_gateway(client: &kube::Client, namespace: &str) -> anyhow::Result<String> {
    let path = format!("/apis/{GROUP_VERSION}/namespaces/{namespace}/gateways");
    let request = http::Request::get(path).body(Vec::new())?;
    let list: serde_json::Value =
        serde_json::from_str(&client.request_text(request).await.context("listing Gateways")?)?;
    let names: Vec<&str> = list["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|g| g["metadata"]["name"].as_str()).collect())
        .unwrap_or_default();
    match names.as_slice() {
        [one] => Ok(one.to_string()),
        [] => anyhow::bail!("no Gateway in namespace {namespace} (choose another with -n)"),
        many => anyhow::bail!(
            "namespace {namespace} has several Gateways ({}): choose one with -g",
            many.join(", ")
        ),
    }
}

/// Admin API requests through the service proxy of `gateway`'s admin Service.
fn proxied(client: kube::Client, namespace: &str, gateway: &str, token: String) -> AdminClient {
    let base = format!("/api/v1/namespaces/{namespace}/services/http:{gateway}-admin:admin/proxy");
    let describe = format!("Gateway {namespace}/{gateway} (through the Kubernetes API server)");
    let send: postern_admin_client::Send = Arc::new(move |call: Call| {
        let (client, token, uri) = (client.clone(), token.clone(), format!("{base}{}", call.path_and_query));
        Box::pin(async move {
            let mut request = http::Request::builder()
                .method(call.method.as_str())
                .uri(uri)
                .header("x-postern-token", token);
            if call.json.is_some() {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
            }
            let request = request
                .body(kube::client::Body::from(call.json.unwrap_or_default()))
                .map_err(|e| e.to_string())?;
            let response = client.send(request).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response.into_body().collect_bytes().await.map_err(|e| e.to_string())?.to_vec();
            Ok(RawAnswer { status, body })
        })
    });
    AdminClient::with_transport(describe, send)
}

async fn run(cli: Cli) -> anyhow::Result<Vec<u8>> {
    let kubeconfig = kube::config::Kubeconfig::read().context("reading the kubeconfig")?;
    let options = kube::config::KubeConfigOptions { context: cli.context.clone(), ..Default::default() };
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.context("loading the kubeconfig")?;
    let token = match cli.token {
        Some(t) => t,
        None => credentials::token(&mut config.auth_info)?,
    };
    let namespace = cli.namespace.unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("connecting to the Kubernetes API server")?;
    let gateway = match cli.gateway {
        Some(g) => g,
        None => only_gateway(&client, &namespace).await?,
    };
    let admin = proxied(client, &namespace, &gateway, token);
    match cli.command {
        Command::Quarantine { action } => postern_admin_client::cli::run_quarantine(action, &admin).await,
        Command::Verification { action } => postern_admin_client::cli::run_verification(action, &admin).await,
        Command::Accounts { action } => postern_admin_client::cli::run_accounts(action, &admin).await,
    }
}

fn main() -> ExitCode {
    postern_admin_client::cli::run_and_print("kubectl postern", run(Cli::parse()))
}
