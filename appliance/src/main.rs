//! The `keksbox` binary: parse arguments, set up logging, load the configuration, serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keksbox::config::Config;

/// keksbox: a keks-meet meeting-room relay for the LAN.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); without it the embedded default is used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:8443 (overrides BIND and the config file).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Serve the web client from this directory instead of the embedded copy.
    #[arg(long, value_name = "DIR")]
    web_dir: Option<PathBuf>,
    /// Serve plain HTTP (for reverse proxies and tests).
    #[arg(long)]
    no_tls: bool,
    /// Where the generated TLS certificate lives (default: $STATE_DIRECTORY under systemd,
    /// else ~/.local/state/keksbox).
    #[arg(long, value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a new self-signed certificate (browsers will show a new fingerprint), then exit.
    /// Restart the service to use it.
    RegenerateCert,
    /// List the keksboxes announced on the LAN (mDNS), with addresses and fingerprints.
    Discover {
        /// Seconds to wait for the first answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
        /// The DNS-SD service type to browse: _keksmeet._tcp (with the fingerprint) or
        /// _https._tcp (what browsers' service lists see).
        #[arg(long, default_value = "_keksmeet._tcp")]
        service: String,
    },
}

fn main() -> ExitCode {
    keksbox::platform::init_logging();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("keksbox: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded()?,
    };
    if let Ok(bind) = std::env::var("BIND") {
        config.server.bind = bind
            .parse()
            .with_context(|| format!("BIND={bind:?} is not an address like 0.0.0.0:8080"))?;
    }
    if let Some(bind) = args.bind {
        config.server.bind = bind;
    }
    if let Some(dir) = args.web_dir {
        config.server.web_dir = Some(dir);
    }
    if args.no_tls {
        config.tls.enabled = false;
    }
    match args.command {
        None => {}
        Some(Command::RegenerateCert) => {
            let dir = keksbox::platform::state_dir(args.state_dir)?;
            let identity = keksbox::platform::regenerate_cert(&config, &dir)?;
            println!(
                "new certificate in {}: SHA-256 {}",
                dir.display(),
                identity.fingerprint()
            );
            println!("restart keksbox (systemctl restart keksbox) to serve it");
            return Ok(());
        }
        Some(Command::Discover { timeout, service }) => {
            let found = keksbox::mdns::discover(&service, Duration::from_secs(timeout))?;
            anyhow::ensure!(!found.is_empty(), "no keksbox answered within {timeout} s");
            for item in found {
                let resolved = keksbox::mdns::resolve_host(&item.host, Duration::from_secs(3))?;
                let resolved: Vec<String> = resolved.iter().map(ToString::to_string).collect();
                println!("{item} host-resolves-to {}", resolved.join(","));
            }
            return Ok(());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Signal handlers go in before anything listens: a SIGTERM that arrives right after
        // start-up must still mean a clean shutdown, not the default of dying on the spot.
        let shutdown = shutdown_signal()?;
        let listeners = keksbox::platform::Listeners::open(&config).await?;
        keksbox::platform::run_appliance(config, listeners, args.state_dir, shutdown).await
    })
}

/// Installs the SIGINT and SIGTERM handlers now and returns a future that completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => log::info!("SIGINT received"),
            _ = term.recv() => log::info!("SIGTERM received"),
        }
    })
}
