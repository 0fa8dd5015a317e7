//! rift: peer-to-peer file drops over a keks-meet room.
//!
//! `rift send PATH...` joins a room (a generated secret unless one is given), offers the files
//! as keks-meet file resources, and prints the secret, the browser link and its QR code.
//! `rift receive [OUT]` joins the same room and downloads what is offered. The bytes go
//! directly between the two machines over a WebRTC data channel; the relay (a keksbox or any
//! keks-meet server) only carries the end-to-end encrypted signaling. Browsers in the room see
//! rift's files and can download them, and rift receives what a browser offers.
//!
//! # Layout
//! - [`cli`]: the command line ([`Cli`]).
//! - [`send`] and [`receive`]: the file drop commands, each a loop over room events.
//! - [`room`]: `rift room`, the interactive prompt (files, chat, exposed and forwarded ports).
//! - [`names`]: which offered names are safe to write under the output directory.
//! - [`secret`]: generated secrets people can read aloud.
//! - [`progress`], [`qr`]: what a person sees on the terminal.
//!
//! All network work is `keks-client`'s; rift decides what to offer, what to accept and when
//! it is done. Exit codes: [`EXIT_DONE`], [`EXIT_CANCELLED`], [`EXIT_ERROR`].

pub mod cli;
pub mod names;
pub mod progress;
pub mod qr;
pub mod receive;
pub mod room;
pub mod secret;
pub mod send;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::{Context as _, bail};
pub use cli::Cli;
use keks_client::discovery::discover;
use keks_client::room::IceOptions;
use keks_client::{KnownServers, RoomOptions, Server, Trust};
use keks_proto::advert::Fingerprint;

/// Everything was transferred.
pub const EXIT_DONE: i32 = 0;
/// Cancelled (Ctrl-C) or refused (an existing file, a hostile name).
pub const EXIT_CANCELLED: i32 = 1;
/// An error: a failed transfer, an unreachable server, a bad argument.
pub const EXIT_ERROR: i32 = 2;

/// Runs the command and returns the exit code; errors are returned for `main` to print.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match &cli.command {
        cli::Command::Send { keep, paths } => {
            let files = send::collect(paths)?;
            let (secret, generated) = secret_or_new(&cli)?;
            let options = room_options(&cli, secret).await?;
            send::run(options, files, *keep, generated).await
        }
        cli::Command::Receive { force, out } => {
            let secret = match secret_from(&cli)? {
                Some(s) => s,
                None => prompt_secret()?,
            };
            let options = room_options(&cli, secret).await?;
            receive::run(options, out.clone(), *force).await
        }
        cli::Command::Room => {
            let (secret, generated) = secret_or_new(&cli)?;
            let options = room_options(&cli, secret).await?;
            room::run(options, generated).await
        }
    }
}

/// The given secret, or a new one (and whether it is new, so it is shown).
fn secret_or_new(cli: &Cli) -> anyhow::Result<(String, bool)> {
    Ok(match secret_from(cli)? {
        Some(s) => (s, false),
        None => (
            secret::generate().context("no random numbers from the operating system")?,
            true,
        ),
    })
}

/// `--secret`, else `RIFT_SECRET`. The flag works but shows the secret to every user of the
/// machine (`ps`), so it warns.
fn secret_from(cli: &Cli) -> anyhow::Result<Option<String>> {
    if let Some(s) = &cli.secret {
        log::warn!("--secret is visible to other users in the process list; RIFT_SECRET or the prompt keep it out");
        return Ok(Some(check_secret(s)?));
    }
    match std::env::var("RIFT_SECRET") {
        Ok(s) if !s.is_empty() => Ok(Some(check_secret(&s)?)),
        _ => Ok(None),
    }
}

fn check_secret(s: &str) -> anyhow::Result<String> {
    let s = s.trim();
    if s.is_empty() {
        bail!("the room secret is empty");
    }
    Ok(s.to_owned())
}

fn prompt_secret() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("room secret (what `rift send` printed): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the secret from standard input")?;
    check_secret(&line).context("no secret given (use RIFT_SECRET, the prompt, or --secret)")
}

/// The server and how to trust it: `--server`/`KEKSBOX_SERVER`, else mDNS discovery.
async fn room_options(cli: &Cli, secret: String) -> anyhow::Result<RoomOptions> {
    let pinned: Option<Fingerprint> = match &cli.fingerprint {
        Some(fp) => Some(fp.parse().context("--fingerprint")?),
        None => None,
    };
    let (server, advertised) = match &cli.server {
        Some(s) => (s.parse::<Server>().with_context(|| format!("--server {s:?}"))?, None),
        None => {
            let found = tokio::task::spawn_blocking(|| discover(Duration::from_secs(3)))
                .await
                .context("discovery task failed")??;
            let chosen = choose(found)?;
            (chosen.server(), chosen.txt.fingerprint)
        }
    };
    let trust = match pinned.or(advertised) {
        Some(fp) => Trust::Pinned(fp),
        None => Trust::FirstUse(
            KnownServers::user()
                .context("no HOME or XDG_CONFIG_HOME for the known-servers file; pin the server with --fingerprint")?,
        ),
    };
    Ok(RoomOptions {
        server,
        trust,
        secret,
        username: cli.username.clone(),
        ice: IceOptions {
            bind: cli.ice_bind.clone(),
            ..Default::default()
        },
    })
}

fn choose(mut found: Vec<keks_client::discovery::Found>) -> anyhow::Result<keks_client::discovery::Found> {
    match found.len() {
        0 => bail!("no keksbox answered on the LAN (mDNS); give the server with --server URL or KEKSBOX_SERVER"),
        1 => Ok(found.remove(0)),
        n => {
            let list: Vec<String> = found
                .iter()
                .enumerate()
                .map(|(i, f)| format!("  {}) {} ({})", i + 1, f.instance, f.server()))
                .collect();
            if !std::io::stdin().is_terminal() {
                bail!("{n} keksboxes answered; choose one with --server:\n{}", list.join("\n"));
            }
            eprintln!("{n} keksboxes answered:\n{}", list.join("\n"));
            eprint!("which one? [1-{n}] ");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let i: usize = line.trim().parse().context("not a number")?;
            if !(1..=n).contains(&i) {
                bail!("no box number {i}");
            }
            Ok(found.remove(i - 1))
        }
    }
}

/// What both commands do alike with the room's next event: the end of the room and a lost
/// server. A first connection that fails, or a refused certificate, is an error; a
/// connection lost later is retried by the client and only reported. Other events are
/// handed back.
pub(crate) fn connection_event(
    event: Option<keks_client::RoomEvent>,
) -> anyhow::Result<Option<keks_client::RoomEvent>> {
    use keks_client::RoomEvent;
    match event {
        None => bail!("the room ended unexpectedly"),
        Some(RoomEvent::Fatal(e)) => bail!("{e}"),
        Some(RoomEvent::Disconnected { reason, ever_connected }) if !ever_connected => bail!("{reason}"),
        Some(RoomEvent::Disconnected { reason, .. }) => {
            eprintln!("lost the server ({reason}); reconnecting...");
            Ok(None)
        }
        Some(other) => Ok(Some(other)),
    }
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
pub(crate) async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
