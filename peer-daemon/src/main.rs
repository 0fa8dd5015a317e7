//! `keksbox-peer`: parse arguments, start logging, load the config and the secret, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use keksbox_peer::config::Config;
use keksbox_peer::daemon::{self, Inputs, Invitation};

/// The meeting room's own camera and microphone as a keks-meet participant.
///
/// The room secret comes from the file named in the config ([room] secret_file) or from the
/// systemd credential "room-secret"; it is never taken from the command line.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The configuration file (see config/peer.toml).
    #[arg(long, default_value = "/etc/keksbox/peer.toml")]
    config: PathBuf,
    /// Check the configuration and the secret, then exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if std::env::var_os("JOURNAL_STREAM").is_some() {
                log::error!("{e:#}");
            } else {
                eprintln!("keksbox-peer: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    if journal {
        if let Ok(logger) = systemd_journal_logger::JournalLog::new() {
            if logger.install().is_ok() {
                log::set_max_level(log::LevelFilter::Info);
                return;
            }
        }
    }
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,webrtc=error,rtc=error,rtc_ice=error,rtc_dtls=error"),
    )
    .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config)?;
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let secret = config.secret(credentials.as_deref())?;
    if cli.check {
        check_devices(&config)?;
        println!(
            "{}: ok ({})",
            cli.config.display(),
            if secret.is_some() {
                "a room is configured"
            } else {
                "no room configured: waiting to be summoned"
            }
        );
        return Ok(());
    }
    if secret.is_none() && config.summon.socket.is_empty() {
        anyhow::bail!(
            "no room secret and summoning is off: set [room] secret_file, use LoadCredential=room-secret:..., or set [summon] socket"
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let devices = daemon::start_devices(&config, stop.clone());
        let invitations = keksbox_peer::summon::listen(&config.summon)?;
        let inputs = Inputs {
            room: secret.map(|secret| Invitation {
                secret,
                summoned: false,
            }),
            invitations,
            devices,
        };
        watchdog();
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let result = daemon::run(config, inputs, shutdown_signal()).await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// Opens each enabled device once, so a wrong path is reported before the service starts
/// (the running daemon only logs it and retries: devices come and go).
fn check_devices(config: &Config) -> anyhow::Result<()> {
    if config.video.enabled {
        if let Err(e) = keksbox_peer::source::open_video(&config.video.device) {
            anyhow::bail!(
                "[video] device = {:?}: {e} (\"\" takes the first camera found, \"synthetic\" the test pattern; or set [video] enabled = false)",
                config.video.device.device
            );
        }
    }
    if config.audio.enabled {
        if let Err(e) = keksbox_peer::source::open_audio(&config.audio.device) {
            anyhow::bail!(
                "[audio] pcm = {:?}: {e} (arecord -L lists capture PCMs; \"synthetic\" is a test tone; or set [audio] enabled = false)",
                config.audio.device.pcm
            );
        }
    }
    Ok(())
}

/// Pets systemd's watchdog at half its interval while the runtime is alive.
fn watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    });
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot watch SIGTERM: {e}; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    log::info!("stopping");
}
