//! `postern-gateway`: run the gateway, or check a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
        Command::Schema => {
            println!("{:#}", postern_api::gateway_config_schema());
            ExitCode::SUCCESS
        }
        Command::Run { config } => match postern_gateway::server::run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("postern-gateway: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
