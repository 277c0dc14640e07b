//! `postern-gateway`: run the gateway, or check a config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// jemalloc, not glibc's malloc: ~7% fewer instructions per message (allocation is ~15% of the
// gateway's user-space work) and no arena fragmentation growing a long-lived pod's RSS. Its
// price, ~15% more RSS under a deep queue, is measured in bench/RESULTS.md.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`. `oversize_threshold:0` turns off its separate arena
/// for requests over 8 MiB, which hands their pages back to the kernel at once: every large
/// message body (a 10 MB one is a 10 MB buffer, several times over) then page-faulted all its
/// memory in again, 75% more CPU per 10 MB message than glibc (bench/RESULTS.md). Large
/// buffers now come from the ordinary arenas, whose freed pages are reused, and returned to
/// the kernel after jemalloc's usual 10 s decay.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_OPTIONS: &[u8; 21] = b"oversize_threshold:0\0";

#[derive(Parser)]
#[command(name = "postern-gateway", version, about = "Postern SMTP gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway from a GatewayConfig YAML file (reloaded when it changes).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a GatewayConfig file; exits non-zero and names each bad field.
    CheckConfig { file: PathBuf },
    /// Print the JSON schema of GatewayConfig.
    Schema,
    /// Print the MTA-STS TXT records (`_mta-sts.<domain>`, with the id of the policy this
    /// config serves) of every served domain, in zone-file form.
    MtaStsRecords { file: PathBuf },
    /// Read a password from standard input (its first line) and print its argon2id hash, for a
    /// users file line `name:HASH[:senders]`.
    HashPassword,
    /// Sending accounts (through a running gateway's admin API): list them with their last
    /// connection test, or test one now (connect, TLS, login, QUIT).
    Accounts {
        #[command(subcommand)]
        action: postern_admin_client::cli::AccountsCommand,
        /// The gateway's admin address.
        #[arg(long, global = true, default_value = "127.0.0.1:8025")]
        admin: SocketAddr,
    },
    /// Destination verification of routing policies (through a running gateway's admin API).
    Verification {
        #[command(subcommand)]
        action: postern_admin_client::cli::VerificationCommand,
        /// The gateway's admin address.
        #[arg(long, global = true, default_value = "127.0.0.1:8025")]
        admin: SocketAddr,
    },
    /// The quarantine: list (search), show, release, delete (through a running gateway's
    /// admin API; any gateway sharing the store will do).
    Quarantine {
        #[command(subcommand)]
        action: postern_admin_client::cli::QuarantineCommand,
        /// The gateway's admin address.
        #[arg(long, global = true, default_value = "127.0.0.1:8025")]
        admin: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match postern_gateway::config::load_file(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e:#}", file.display());
                ExitCode::from(1)
            }
        },
        Command::MtaStsRecords { file } => match postern_gateway::config::load_file(&file) {
            Ok(config) => match &config.mta_sts {
                Some(policy) => {
                    let txt = policy.txt_record(&config.hostname);
                    for d in &config.domains {
                        println!("_mta-sts.{}. IN TXT \"{txt}\"", d.name.trim_end_matches('.'));
                    }
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("{}: no mtaSts section", file.display());
                    ExitCode::from(1)
                }
            },
            Err(e) => {
                eprintln!("{}: {e:#}", file.display());
                ExitCode::from(1)
            }
        },
        Command::Schema => {
            println!("{:#}", postern_api::gateway_config_schema());
            ExitCode::SUCCESS
        }
        Command::HashPassword => {
            let mut line = String::new();
            let hashed = std::io::stdin().read_line(&mut line).map_err(anyhow::Error::from).and_then(|_| {
                postern_gateway::auth::password::hash(line.trim_end_matches(['\r', '\n']).as_bytes())
            });
            match hashed {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("postern-gateway: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Verification { action, admin } => admin_command(admin, async move |client| {
            postern_admin_client::cli::run_verification(action, &client).await
        }),
        Command::Accounts { action, admin } => admin_command(admin, async move |client| {
            postern_admin_client::cli::run_accounts(action, &client).await
        }),
        Command::Quarantine { action, admin } => admin_command(admin, async move |client| {
            postern_admin_client::cli::run_quarantine(action, &client).await
        }),
        Command::Run { config } => match postern_gateway::server::run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("postern-gateway: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// Runs one admin API call on a small runtime of its own and prints what it returns.
fn admin_command(
    admin: SocketAddr,
    call: impl AsyncFnOnce(postern_admin_client::AdminClient) -> anyhow::Result<Vec<u8>>,
) -> ExitCode {
    let mut client = postern_admin_client::AdminClient::new(&admin.to_string());
    // The gateway's admin.tokenFile, if it has one: a token from the environment or a file.
    let token = match std::env::var("POSTERN_ADMIN_TOKEN_FILE") {
        Ok(path) => match std::fs::read_to_string(&path) {
            Ok(text) => {
                text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).map(String::from)
            }
            Err(e) => {
                eprintln!("postern-gateway: POSTERN_ADMIN_TOKEN_FILE {path}: {e}");
                return ExitCode::from(1);
            }
        },
        Err(_) => std::env::var("POSTERN_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    if let Some(token) = token {
        client = client.with_token(token);
    }
    postern_admin_client::cli::run_and_print("postern-gateway", call(client))
}
