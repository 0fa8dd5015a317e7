//! The command line.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Peer-to-peer file drops through a keksbox (or any keks-meet server).
///
/// The files go directly between the machines over WebRTC, end-to-end encrypted; the server
/// only relays the encrypted handshake. Browsers in the same room can take part.
#[derive(Debug, Parser)]
#[command(name = "rift", version, max_term_width = 100)]
#[command(
    after_help = "Examples:\n  rift send report.pdf photos/     prints a secret and a link for the other side\n  \
                        RIFT_SECRET=lusab-... rift receive   downloads into the current directory\n\n\
                        The secret is read from RIFT_SECRET or asked for; --secret works too but shows it to other users.\n\
                        Exit codes: 0 done, 1 cancelled or refused, 2 error."
)]
pub struct Cli {
    /// The server: https://host[:port], wss://host/signaling or host[:port]. Default: the
    /// keksbox found on the LAN by mDNS.
    #[arg(long, env = "KEKSBOX_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,

    /// Trust only the certificate with this SHA-256 fingerprint (as the box's console and
    /// start page show it). Default: the fingerprint the box announces, else the one seen on
    /// first use.
    #[arg(long, env = "KEKSBOX_FINGERPRINT", global = true, value_name = "SHA256")]
    pub fingerprint: Option<String>,

    /// The name other members see.
    #[arg(long, global = true, default_value = "rift", value_name = "NAME")]
    pub username: String,

    /// The room secret (visible in the process list: prefer RIFT_SECRET or the prompt).
    #[arg(long, global = true, value_name = "SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Gather WebRTC candidates only on these local addresses (comma separated).
    #[arg(long, env = "RIFT_ICE_BIND", global = true, value_delimiter = ',', hide = true)]
    pub ice_bind: Vec<IpAddr>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Offer files and directories (directories are sent as their files, with relative names).
    Send {
        /// Keep offering after the first complete download (until Ctrl-C).
        #[arg(long)]
        keep: bool,
        /// Files and directories to offer.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Download what is offered in the room into OUT (default: the current directory).
    Receive {
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// The directory to write into.
        #[arg(value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Stay in the room with a prompt: list, provide, download, stop, chat, and expose or
    /// forward TCP ports (`help` at the prompt lists the commands).
    Room,
}
