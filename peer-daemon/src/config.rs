//! The daemon's configuration: `/etc/keksbox/peer.toml` (see `config/peer.toml`, which
//! comments every key and is parsed by a test).
//!
//! Secrets are never in this file or on the command line: the room secret is read from a file
//! named here, or from the systemd credential `room-secret` (`LoadCredential=`, found under
//! `$CREDENTIALS_DIRECTORY`). Unknown keys are errors, so a typo does not silently fall back to a
//! default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::source::{AudioConfig, VideoConfig};

/// The systemd credential that holds the room secret (`LoadCredential=room-secret:...`).
pub const SECRET_CREDENTIAL: &str = "room-secret";
/// Longest room secret accepted from a file (keks-meet secrets are short; this bounds a
/// mistaken path such as a disk image).
const MAX_SECRET: usize = 4096;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The relay and the room.
    #[serde(default)]
    pub room: RoomConfig,
    /// The camera; `enabled = false` under `[video]` leaves it out.
    #[serde(default)]
    pub video: VideoSection,
    /// The microphone.
    #[serde(default)]
    pub audio: AudioSection,
    /// Being invited into a room from the appliance's start page.
    #[serde(default)]
    pub summon: SummonConfig,
}

/// `[room]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomConfig {
    /// `https://host:port`, `wss://...` or `ws://...`; empty means find a keksbox with mDNS.
    pub server: String,
    /// SHA-256 fingerprint of the server's certificate (hex, colons allowed); empty trusts on
    /// first use.
    pub fingerprint: String,
    /// A file holding the room secret (first line). Empty: the systemd credential
    /// `room-secret`, or no room at all (the daemon then waits to be summoned).
    pub secret_file: String,
    /// The name other members see.
    pub name: String,
    /// Local addresses for WebRTC host candidates (empty: every interface).
    pub ice_bind: Vec<std::net::IpAddr>,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            server: String::new(),
            fingerprint: String::new(),
            secret_file: String::new(),
            name: "keksbox camera".into(),
            ice_bind: Vec::new(),
        }
    }
}

/// `[video]`: whether to provide the camera, its label and encoder settings, then the device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
// No deny_unknown_fields here: serde cannot combine it with flatten; the flattened device
// config denies unknown keys itself.
#[serde(default)]
pub struct VideoSection {
    pub enabled: bool,
    /// What members see on the resource.
    pub label: String,
    /// Target H.264 bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Seconds between forced keyframes (receivers ask for more with PLI/FIR).
    pub keyframe_interval_s: u32,
    #[serde(flatten)]
    pub device: VideoConfig,
}

impl Default for VideoSection {
    fn default() -> Self {
        VideoSection {
            enabled: true,
            label: "Camera".into(),
            bitrate_kbps: 1000,
            keyframe_interval_s: 10,
            device: VideoConfig::default(),
        }
    }
}

/// `[audio]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
// No deny_unknown_fields here: serde cannot combine it with flatten; the flattened device
// config denies unknown keys itself.
#[serde(default)]
pub struct AudioSection {
    pub enabled: bool,
    pub label: String,
    /// Target Opus bitrate in kbit/s.
    pub bitrate_kbps: u32,
    #[serde(flatten)]
    pub device: AudioConfig,
}

impl Default for AudioSection {
    fn default() -> Self {
        AudioSection {
            enabled: true,
            label: "Microphone".into(),
            bitrate_kbps: 32,
            device: AudioConfig::default(),
        }
    }
}

/// `[summon]`: off unless `socket` is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SummonConfig {
    /// The unix socket keksbox hands invitations to; empty disables summoning.
    pub socket: String,
    /// Leave a summoned room when no human has been in it for this many seconds.
    pub leave_after_s: u64,
}

impl Default for SummonConfig {
    fn default() -> Self {
        SummonConfig {
            socket: String::new(),
            leave_after_s: 60,
        }
    }
}

impl SummonConfig {
    pub fn leave_after(&self) -> Duration {
        Duration::from_secs(self.leave_after_s)
    }
}

/// Why the configuration cannot be used; each message says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path} (create it from config/peer.toml or pass --config)")]
    Read { path: PathBuf, source: std::io::Error },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The secret file is missing or unreadable.
    #[error(
        "cannot read the room secret from {path} (set [room] secret_file to a readable file, or use LoadCredential=room-secret:...)"
    )]
    Secret { path: PathBuf, source: std::io::Error },
    /// The secret file is empty or too long.
    #[error("{path}: {why} (put the room secret alone on the first line)")]
    BadSecret { path: PathBuf, why: &'static str },
    /// A value out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: PathBuf::from("config"),
            message,
        };
        let config: Config = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        // serde cannot deny unknown keys next to a flattened struct: check the device keys of
        // [video] and [audio] against the device configs, which do deny unknown keys.
        let table: toml::Table = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        for (section, own) in [
            (
                "video",
                &["enabled", "label", "bitrate_kbps", "keyframe_interval_s"][..],
            ),
            ("audio", &["enabled", "label", "bitrate_kbps"][..]),
        ] {
            let Some(toml::Value::Table(t)) = table.get(section) else {
                continue;
            };
            let mut rest = t.clone();
            rest.retain(|k: &str, _| !own.contains(&k));
            let checked = match section {
                "video" => rest.try_into::<VideoConfig>().map(drop),
                _ => rest.try_into::<AudioConfig>().map(drop),
            };
            checked.map_err(|e| parse_error(format!("[{section}]: {e}")))?;
        }
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let v = &self.video;
        if v.enabled && !(50..=20_000).contains(&v.bitrate_kbps) {
            return Err(ConfigError::Invalid(format!(
                "[video] bitrate_kbps = {} is out of range (use 50 to 20000)",
                v.bitrate_kbps
            )));
        }
        if v.enabled && !(1..=60).contains(&v.keyframe_interval_s) {
            return Err(ConfigError::Invalid(format!(
                "[video] keyframe_interval_s = {} is out of range (use 1 to 60)",
                v.keyframe_interval_s
            )));
        }
        let a = &self.audio;
        if a.enabled && !(6..=256).contains(&a.bitrate_kbps) {
            return Err(ConfigError::Invalid(format!(
                "[audio] bitrate_kbps = {} is out of range (use 6 to 256)",
                a.bitrate_kbps
            )));
        }
        if !self.summon.socket.is_empty() && self.summon.leave_after_s == 0 {
            return Err(ConfigError::Invalid("[summon] leave_after_s must be at least 1".into()));
        }
        if !v.enabled && !a.enabled {
            return Err(ConfigError::Invalid(
                "both [video] and [audio] are disabled: enable at least one".into(),
            ));
        }
        Ok(())
    }

    /// The room secret: from `secret_file`, else from the systemd credential, else `None`
    /// (no configured room; the daemon waits to be summoned).
    pub fn secret(&self, credentials_dir: Option<&Path>) -> Result<Option<String>, ConfigError> {
        let path = if !self.room.secret_file.is_empty() {
            PathBuf::from(&self.room.secret_file)
        } else if let Some(dir) = credentials_dir {
            let p = dir.join(SECRET_CREDENTIAL);
            if !p.exists() {
                return Ok(None);
            }
            p
        } else {
            return Ok(None);
        };
        read_secret(&path).map(Some)
    }
}

fn read_secret(path: &Path) -> Result<String, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Secret {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > MAX_SECRET as u64 {
        return Err(ConfigError::BadSecret {
            path: path.to_owned(),
            why: "the file is too large to be a room secret",
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Secret {
        path: path.to_owned(),
        source,
    })?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(ConfigError::BadSecret {
            path: path.to_owned(),
            why: "the file is empty",
        });
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses() {
        let text = include_str!("../../config/peer.toml");
        let c = Config::parse(text).expect("config/peer.toml parses");
        assert!(c.video.enabled && c.audio.enabled);
        assert_eq!(c.video.device.width, 640);
        assert_eq!(c.summon.socket, "", "summoning is off unless configured");
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let c = Config::parse("").expect("empty parses");
        assert_eq!(c.room.name, "keksbox camera");
        assert_eq!(c.summon.leave_after_s, 60);
    }

    #[test]
    fn unknown_keys_are_named() {
        for (text, key) in [
            ("[room]\nsecert_file = \"x\"\n", "secert_file"),
            ("[video]\nwidht = 640\n", "widht"),
            ("[audio]\npcn = \"default\"\n", "pcn"),
            ("colour = 1\n", "colour"),
        ] {
            let e = Config::parse(text).expect_err(text).to_string();
            assert!(e.contains(key), "{e:?} names {key}");
        }
    }

    #[test]
    fn out_of_range_values_say_what_to_use() {
        let e = Config::parse("[video]\nbitrate_kbps = 1\n")
            .expect_err("tiny bitrate")
            .to_string();
        assert!(e.contains("use 50 to 20000"), "{e}");
        let e = Config::parse("[video]\nenabled = false\n[audio]\nenabled = false\n")
            .expect_err("nothing to provide")
            .to_string();
        assert!(e.contains("enable at least one"), "{e}");
    }

    #[test]
    fn secrets_come_from_a_file_or_the_credential() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let c = Config::parse(&format!("[room]\nsecret_file = {:?}\n", missing.display().to_string())).expect("parse");
        let e = c.secret(None).expect_err("missing file").to_string();
        assert!(e.contains("set [room] secret_file"), "{e}");
        assert!(e.contains("nope"), "{e}");

        std::fs::write(&missing, "correct horse battery\nsecond line ignored\n").expect("write");
        assert_eq!(c.secret(None).expect("reads").as_deref(), Some("correct horse battery"));

        std::fs::write(&missing, "\n").expect("write");
        let e = c.secret(None).expect_err("empty").to_string();
        assert!(e.contains("is empty"), "{e}");

        let c = Config::parse("").expect("parse");
        assert_eq!(c.secret(None).expect("none"), None);
        assert_eq!(c.secret(Some(dir.path())).expect("no credential"), None);
        std::fs::write(dir.path().join(SECRET_CREDENTIAL), "from-systemd").expect("write");
        assert_eq!(
            c.secret(Some(dir.path())).expect("credential").as_deref(),
            Some("from-systemd")
        );
    }
}
