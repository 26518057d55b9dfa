//! `email-reports`: the email-event service (webhook ingest, materialiser, reports API), a
//! whole local product in one command (`dev`), and its load generator and checker.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use email_reports::service::{self, ServiceConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "email-reports", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one instance against a running cluster.
    Serve(ServeArgs),
    /// Start a local 3-broker cluster (`broker dev`) and one instance on it, with generated
    /// development secrets; prints the webhook and report URLs.
    Dev(email_reports::dev::DevArgs),
    /// Post signed provider traffic at a rate and write the ground truth it sent.
    Loadgen(email_reports::loadgen::LoadgenArgs),
    /// Compare the reports API with a ground truth written by `loadgen`.
    Check(email_reports::loadgen::CheckArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Service config file (TOML); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Brokers to connect to first (comma-separated).
    #[arg(long, value_delimiter = ',', env = "EMAIL_REPORTS_BOOTSTRAP")]
    bootstrap: Option<Vec<String>>,
    /// HTTP listen address.
    #[arg(long)]
    listen: Option<String>,
    /// Where the report store lives.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve the reports and webhooks but do not join the materialiser's group.
    #[arg(long)]
    no_materialise: bool,
    /// Do not accept webhooks on this instance.
    #[arg(long)]
    no_ingest: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Dev(args) => email_reports::dev::run(args).await,
        Command::Loadgen(args) => email_reports::loadgen::run(args).await,
        Command::Check(args) => email_reports::loadgen::check(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => ServiceConfig::load(path)?,
        None => ServiceConfig::default(),
    };
    if let Some(bootstrap) = args.bootstrap {
        config.bootstrap = bootstrap;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    config.materialise &= !args.no_materialise;
    config.ingest &= !args.no_ingest;
    // TLS to the brokers from the environment, by Kafka's names: BROKER_SECURITY_PROTOCOL=SSL,
    // BROKER_SSL_CA_LOCATION, BROKER_SSL_CERTIFICATE_LOCATION, BROKER_SSL_KEY_LOCATION.
    let security = client::Security::from_env()?;
    let mut running = service::start(config, security).await.context("starting")?;
    // Printed on stdout for scripts and tests: the address actually bound (port 0 allowed).
    println!("listening on http://{}", running.address);
    tokio::select! {
        outcome = running.wait_any() => outcome,
        _ = stop_requested() => running.stop().await,
    }
}

/// Ctrl-C or SIGTERM (how service managers and the tests stop the process).
async fn stop_requested() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
