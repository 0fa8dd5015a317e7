//! Configuration: a typed struct whose defaults are the shipped, commented
//! `config/default.toml`, embedded in the binary so `keksbox` runs without a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The shipped default configuration, every key commented.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Everything keksbox can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: Limits,
    pub webrtc: WebrtcConfig,
    pub tls: crate::tls::TlsConfig,
    pub mdns: crate::mdns::MdnsConfig,
    pub turn: crate::turn::TurnConfig,
    /// `[summon]`: inviting keksbox-peer into a room from the start page (off by default).
    pub summon: crate::summon::SummonConfig,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub web_dir: Option<PathBuf>,
}

/// `[limits]`: what one client may cost the relay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub buffered_bytes: usize,
    pub max_message_size: usize,
    pub max_frame_size: usize,
    pub max_watched_rooms: usize,
    pub send_queue_messages: usize,
    pub send_queue_bytes: usize,
    pub idle_timeout_secs: u64,
    pub message_timeout_secs: u64,
    pub handshake_timeout_secs: u64,
    pub write_timeout_secs: u64,
    pub relay_bytes_per_sec: usize,
    pub relay_burst_bytes: usize,
}

/// `[webrtc]`: ICE servers for browsers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    pub stun: Option<String>,
    pub turn: Option<String>,
    pub turn_user: Option<String>,
    pub turn_cred: Option<String>,
}

// These mirror config/default.toml; a test checks that the two agree.
impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8443)),
            web_dir: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_address: 32,
            buffered_bytes: 96 << 20,
            max_message_size: 8 << 20,
            max_frame_size: 8 << 20,
            max_watched_rooms: 64,
            send_queue_messages: 2048,
            send_queue_bytes: 16 << 20,
            idle_timeout_secs: 90,
            message_timeout_secs: 30,
            handshake_timeout_secs: 10,
            write_timeout_secs: 10,
            relay_bytes_per_sec: 2 << 20,
            relay_burst_bytes: 8 << 20,
        }
    }
}

impl Limits {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn message_timeout(&self) -> Duration {
        Duration::from_secs(self.message_timeout_secs)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }
}

impl Config {
    /// Parses a configuration text; missing keys take their defaults.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!("{}", e.message().trim()).context(match e.span() {
                Some(span) => format!("at line {}", line_of(text, span.start)),
                None => "in the configuration".to_owned(),
            })
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The embedded default.
    pub fn embedded() -> anyhow::Result<Config> {
        Config::parse(DEFAULT_TOML).context("the embedded default config is invalid")
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.summon.check().map_err(|e| anyhow::anyhow!(e))?;
        let l = &self.limits;
        for (name, value) in [
            ("limits.max_connections", l.max_connections),
            ("limits.max_connections_per_address", l.max_connections_per_address),
            ("limits.buffered_bytes", l.buffered_bytes),
            ("limits.max_message_size", l.max_message_size),
            ("limits.max_frame_size", l.max_frame_size),
            ("limits.send_queue_messages", l.send_queue_messages),
            ("limits.send_queue_bytes", l.send_queue_bytes),
            ("limits.idle_timeout_secs", l.idle_timeout_secs as usize),
            ("limits.message_timeout_secs", l.message_timeout_secs as usize),
            ("limits.handshake_timeout_secs", l.handshake_timeout_secs as usize),
            ("limits.write_timeout_secs", l.write_timeout_secs as usize),
            ("limits.relay_bytes_per_sec", l.relay_bytes_per_sec),
            ("limits.relay_burst_bytes", l.relay_burst_bytes),
        ] {
            anyhow::ensure!(value > 0, "{name} must be greater than 0");
        }
        anyhow::ensure!(
            self.tls.handshake_timeout_secs > 0,
            "tls.handshake_timeout_secs must be greater than 0"
        );
        anyhow::ensure!(
            // Port 0 asks for any free port: two of those never clash.
            !(self.tls.enabled
                && self.tls.redirect
                && self.tls.redirect_bind == self.server.bind
                && self.server.bind.port() != 0),
            "tls.redirect_bind and server.bind are both {}: the HTTP redirect needs its own port",
            self.server.bind
        );
        self.tls.validate()?;
        self.mdns.host()?;
        self.turn.validate()?;
        anyhow::ensure!(
            l.send_queue_bytes >= l.max_message_size,
            "limits.send_queue_bytes ({}) must be at least limits.max_message_size ({}), or no \
             message of the largest size could ever be queued",
            l.send_queue_bytes,
            l.max_message_size
        );
        anyhow::ensure!(
            l.relay_burst_bytes <= l.send_queue_bytes,
            "limits.relay_burst_bytes ({}) must not exceed limits.send_queue_bytes ({}): a member's burst \
             must fit the queue of a member who keeps reading, or a flood would evict readers",
            l.relay_burst_bytes,
            l.send_queue_bytes
        );
        anyhow::ensure!(
            l.buffered_bytes >= l.max_message_size,
            "limits.buffered_bytes ({}) must be at least limits.max_message_size ({})",
            l.buffered_bytes,
            l.max_message_size
        );
        Ok(())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_matches_the_code_defaults() {
        assert_eq!(Config::embedded().expect("valid"), Config::default());
    }

    #[test]
    fn missing_keys_take_defaults() {
        let c = Config::parse("[server]\nbind = \"0.0.0.0:9000\"\n").expect("valid");
        assert_eq!(c.server.bind.port(), 9000);
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        for (text, name) in [
            ("bnid = 1", "bnid"),
            ("[server]\nbindd = \"x\"", "bindd"),
            ("[limits]\nmax_conections = 3", "max_conections"),
            ("[webrtc]\nstunn = \"x\"", "stunn"),
            ("[tls]\ncert = \"x\"", "cert"),
            ("[mdns]\nname = \"x\"", "name"),
            ("[turn]\nport_min = 1", "port_min"),
        ] {
            let err = format!("{:#}", Config::parse(text).expect_err(text));
            assert!(err.contains(name), "{err} should name {name}");
        }
    }

    #[test]
    fn bad_values_are_rejected() {
        for text in [
            "[server]\nbind = \"nope\"",
            "[limits]\nmax_connections = -1",
            "[limits]\nmax_connections = 0",
            "[limits]\nsend_queue_bytes = 10",
            "[limits]\nrelay_burst_bytes = 33554432",
            "[limits]\nbuffered_bytes = 1024",
            "[limits]\nmax_connections_per_address = 0",
            "[webrtc]\nstun = 5",
            "[tls]\nredirect_bind = \"127.0.0.1:8443\"",
            "[tls]\nhandshake_timeout_secs = 0",
            "[tls]\nextra_names = \"not-a-list\"",
            "[mdns]\nhost_name = \"two words\"",
            "[turn]\nallowed_prefixes = [\"lan\"]",
            "[turn]\nrelay_port_min = 60000\nrelay_port_max = 50000",
            "[tls]\ncert_file = \"/etc/cert.pem\"",
            "[tls]\nextra_names = [\"no way\"]",
            "not toml at all [",
        ] {
            assert!(Config::parse(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn errors_say_where() {
        let err = format!(
            "{:#}",
            Config::parse("\n\n[limits]\nmax_connections = \"many\"").expect_err("bad")
        );
        assert!(err.contains("line 4"), "{err}");
    }
}
