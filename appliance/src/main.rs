//! The `keksbox` binary: parse arguments, set up logging, load the configuration, serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use keksbox::config::Config;

/// keksbox: a keks-meet meeting-room relay for the LAN.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); without it the embedded default is used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:8080 (overrides BIND and the config file).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Serve the web client from this directory instead of the embedded copy.
    #[arg(long, value_name = "DIR")]
    web_dir: Option<PathBuf>,
    /// Serve plain HTTP (for reverse proxies and tests).
    #[arg(long)]
    no_tls: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
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
        config.server.bind = bind.parse().with_context(|| format!("BIND={bind:?} is not an address like 0.0.0.0:8080"))?;
    }
    if let Some(bind) = args.bind {
        config.server.bind = bind;
    }
    if let Some(dir) = args.web_dir {
        config.server.web_dir = Some(dir);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let bind = config.server.bind;
        let listener = tokio::net::TcpListener::bind(bind).await.map_err(|e| bind_error(bind, e))?;
        let local = listener.local_addr().context("listener has no address")?;
        log::info!("{} listening on http://{local}/", keksbox::VERSION);
        keksbox::run(config, listener, shutdown_signal()).await
    })
}

fn bind_error(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; or set server.bind / --bind to a port above 1024)"
        }
        std::io::ErrorKind::AddrInUse => " (another program uses this port; stop it or choose another with --bind)",
        std::io::ErrorKind::AddrNotAvailable => " (this machine has no such address; use 0.0.0.0 or one of its addresses)",
        _ => "",
    };
    anyhow::anyhow!("cannot bind {addr}: {e}{hint}")
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT received"),
        _ = term.recv() => log::info!("SIGTERM received"),
    }
}
