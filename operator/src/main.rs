//! `postern-operator`: print the CRDs, or render manifests into a GatewayConfig offline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::ResourceExt;
use postern_operator::{crd, manifests::Objects, render};

#[derive(Parser)]
#[command(name = "postern-operator", version, about = "Postern's Kubernetes operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (in-cluster config, or KUBECONFIG), with /healthz, /readyz and
    /// /metrics on --admin.
    Run {
        #[arg(long, default_value = "0.0.0.0:8080")]
        admin: std::net::SocketAddr,
    },
    /// Print the CustomResourceDefinitions (YAML), or write one file per CRD into --out.
    Crdgen {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Render the GatewayConfig of a Gateway from manifest files (GitOps previews, CI checks).
    /// Problems (a missing policy, an invalid config) go to stderr and make the exit status 1.
    Render {
        /// A manifest file or a directory of them (read recursively).
        #[arg(short = 'f', long = "filename")]
        path: PathBuf,
        /// Which Gateway (needed when the manifests hold several).
        #[arg(long)]
        gateway: Option<String>,
        /// Namespace of objects that name none.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Print how long reading, rendering and writing took (stderr).
        #[arg(long)]
        timings: bool,
        /// Print every Kubernetes object the operator would apply (ConfigMap, StatefulSet or
        /// Deployment, Services, NetworkPolicy, HPA, PDB, ServiceMonitor) for each Gateway (or
        /// the one --gateway names), as multi-document YAML, instead of the config alone.
        #[arg(long)]
        objects: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { admin } => {
            let telemetry = match postern_operator::telemetry::init() {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            // One crypto provider for every TLS client in the process (kube's, the exporter's).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let result = rt.block_on(async {
                let client = kube::Client::try_default().await?;
                let ctx = std::sync::Arc::new(postern_operator::controller::Context::new(client.clone()));
                tokio::spawn(postern_operator::http::serve(admin, ctx.clone()));
                // Several replicas may run; the one holding the Lease reconciles.
                let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into());
                let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("postern-operator-{}", std::process::id()));
                let election = postern_operator::leader::Election {
                    api: kube::Api::namespaced(client.clone(), &namespace),
                    name: "postern-operator".into(),
                    identity,
                    lease_duration: std::time::Duration::from_secs(15),
                };
                election.acquire().await;
                match &ctx.scope {
                    postern_operator::controller::Scope::Cluster => tracing::info!("watching every namespace"),
                    postern_operator::controller::Scope::Namespaces(list) => tracing::info!(namespaces = ?list, "watching only these namespaces (POSTERN_WATCH_NAMESPACES)"),
                }
                tokio::select! {
                    r = postern_operator::controller::run(client, ctx.clone(), ctx.scope.clone()) => r,
                    () = election.keep() => Err(anyhow::anyhow!("lost the leader lease; exiting so another replica leads")),
                }
            });
            if let Some(provider) = telemetry {
                let _ = provider.shutdown();
            }
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Crdgen { out: None } => {
            print!("{}", crd::yaml());
            ExitCode::SUCCESS
        }
        Command::Crdgen { out: Some(dir) } => match write_crds(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Command::Render { path, gateway, namespace, timings: _, objects: true } => {
            match render_objects(&path, gateway.as_deref(), &namespace) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => fail(e),
            }
        }
        Command::Render { path, gateway, namespace, timings, objects: false } => {
            match render_files(&path, gateway.as_deref(), &namespace, timings) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => fail(e),
            }
        }
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("postern-operator: {e:#}");
    ExitCode::from(1)
}

fn write_crds(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for c in crd::all() {
        let file = dir.join(format!("{}.yaml", c.metadata.name.as_deref().unwrap_or("crd")));
        std::fs::write(&file, crd::to_yaml(&c))?;
    }
    Ok(())
}

/// Prints the objects the operator would apply for each Gateway (or the named one); returns
/// whether everything rendered cleanly. Objects read from files have no uid, so the objects
/// carry no owner references; everything else is what the controller applies.
fn render_objects(path: &std::path::Path, gateway: Option<&str>, namespace: &str) -> anyhow::Result<bool> {
    let objs = Objects::from_dir(path, namespace)?;
    let mut gateways: Vec<_> =
        objs.gateways.iter().filter(|g| gateway.is_none_or(|n| g.name_any() == n)).collect();
    gateways.sort_by_key(|g| g.name_any());
    if gateways.is_empty() {
        anyhow::bail!("no Gateway {} in {}", gateway.unwrap_or(""), path.display());
    }
    let defaults = postern_operator::resources::Defaults::from_env();
    let mut clean = true;
    let mut docs = Vec::new();
    for gw in gateways {
        let r = render::render(gw, &objs);
        for p in &r.problems {
            eprintln!("{} {}: {}: {}", p.kind, p.name, p.reason, p.message);
        }
        for e in &r.config_errors {
            eprintln!("Gateway {}: ConfigInvalid: {e}", gw.name_any());
        }
        clean &= r.problems.is_empty() && r.config_errors.is_empty();
        let observed = postern_operator::resources::Observed::default();
        if let Some(children) = postern_operator::resources::Children::new(gw, &r, &defaults, &observed) {
            for v in children.to_values() {
                docs.push(serde_yaml::to_string(&v)?);
            }
        }
    }
    print!("{}", docs.join("---\n"));
    Ok(clean)
}

/// Prints the rendered config; returns whether everything rendered cleanly.
fn render_files(
    path: &std::path::Path,
    gateway: Option<&str>,
    namespace: &str,
    timings: bool,
) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    let objs = Objects::from_dir(path, namespace)?;
    let read = started.elapsed();
    let gw = match gateway {
        Some(name) => objs.gateways.iter().find(|g| g.name_any() == name),
        None if objs.gateways.len() == 1 => objs.gateways.first(),
        None => {
            let mut names: Vec<String> = objs.gateways.iter().map(|g| g.name_any()).collect();
            names.sort();
            anyhow::bail!("{} Gateways found ({}); choose one with --gateway", names.len(), names.join(", "))
        }
    };
    let gw =
        gw.ok_or_else(|| anyhow::anyhow!("no Gateway {} in {}", gateway.unwrap_or(""), path.display()))?;
    let r = render::render(gw, &objs);
    let rendered = started.elapsed();
    for p in &r.problems {
        eprintln!("{} {}: {}: {}", p.kind, p.name, p.reason, p.message);
    }
    for e in &r.config_errors {
        eprintln!("Gateway {}: ConfigInvalid: {e}", gw.name_any());
    }
    if let Some(y) = r.yaml() {
        print!("{y}");
    }
    if timings {
        let total = started.elapsed();
        eprintln!(
            "timings: read {:.1} ms, render {:.1} ms, write {:.1} ms, total {:.1} ms ({} domains)",
            read.as_secs_f64() * 1e3,
            (rendered - read).as_secs_f64() * 1e3,
            (total - rendered).as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            r.served.len()
        );
    }
    Ok(r.problems.is_empty() && r.config_errors.is_empty())
}
