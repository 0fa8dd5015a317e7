//! Where the relay is: a [`Server`] parsed from what a person types (`keksbox.local`,
//! `https://keksbox.local:8443`, `wss://meet.example/signaling`, `ws://127.0.0.1:8080`), and
//! the URLs derived from it (signaling WebSocket, `/config.json`, the browser link to a room).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use keks_proto::advert::SIGNALING_PATH;

/// A keks-meet server (a keksbox or any keks-meet deployment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Whether to speak TLS (`https`/`wss`).
    pub tls: bool,
    /// The host name or IP address, as it goes into SNI, the Host header and links.
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// A path prefix when the server lives below `/` (`https://example.org/meet`), without a
    /// trailing slash; empty for the root.
    pub base_path: String,
    /// Where to connect when the host name is not resolvable by the system resolver (a
    /// `.local` name found by mDNS discovery); `None` resolves `host`.
    pub connect_to: Option<SocketAddr>,
}

/// Why a server address could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerParseError {
    /// A scheme other than http, https, ws or wss.
    #[error("unsupported scheme {0:?} in the server address (use https://host, wss://host or host[:port])")]
    Scheme(String),
    /// No host name.
    #[error("the server address {0:?} has no host name (use https://host, wss://host or host[:port])")]
    NoHost(String),
    /// The port is not a number from 1 to 65535.
    #[error("bad port in the server address {0:?}")]
    Port(String),
    /// Spaces, a query or other characters that cannot be part of a server address.
    #[error("{0:?} is not a server address (use https://host, wss://host or host[:port])")]
    Invalid(String),
}

impl FromStr for Server {
    type Err = ServerParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) || s.contains(['?', '#', '@']) {
            return Err(ServerParseError::Invalid(input.to_owned()));
        }
        let (tls, rest) = match s.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "https" | "wss" => (true, rest),
                "http" | "ws" => (false, rest),
                other => return Err(ServerParseError::Scheme(other.to_owned())),
            },
            // A bare host name: keksboxes speak HTTPS.
            None => (true, s),
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = split_host_port(authority).ok_or_else(|| ServerParseError::Port(input.to_owned()))?;
        if host.is_empty() {
            return Err(ServerParseError::NoHost(input.to_owned()));
        }
        let valid_host = host.parse::<IpAddr>().is_ok()
            || host
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid_host {
            return Err(ServerParseError::Invalid(input.to_owned()));
        }
        let path = path.trim_end_matches('/');
        let base_path = path.strip_suffix(SIGNALING_PATH).unwrap_or(path).trim_end_matches('/');
        Ok(Server {
            tls,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            base_path: base_path.to_owned(),
            connect_to: None,
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`. `None` for a bad port.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0)?),
    };
    Some((host, port))
}

impl Server {
    /// `host:port`, with brackets around an IPv6 address: for the Host header and the
    /// known-servers store.
    pub fn authority(&self) -> String {
        let host = match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        };
        format!("{host}:{}", self.port)
    }

    fn url(&self, ws: bool, path: &str) -> String {
        let scheme = match (ws, self.tls) {
            (true, true) => "wss",
            (true, false) => "ws",
            (false, true) => "https",
            (false, false) => "http",
        };
        let default_port = if self.tls { 443 } else { 80 };
        let authority = if self.port == default_port {
            self.authority()
                .rsplit_once(':')
                .map(|(h, _)| h.to_owned())
                .unwrap_or_default()
        } else {
            self.authority()
        };
        format!("{scheme}://{authority}{}{path}", self.base_path)
    }

    /// The signaling WebSocket's URL.
    pub fn signaling_url(&self) -> String {
        self.url(true, SIGNALING_PATH)
    }

    /// The path (with the base) of an HTTP resource, for the request line.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    /// The browser link to a room: `https://host/room#<secret>`. The secret is
    /// percent-encoded where a browser would otherwise change it (the page decodes it).
    pub fn room_link(&self, secret: &str) -> String {
        let mut encoded = String::with_capacity(secret.len());
        for b in secret.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~!$'()*+,;=:@/".contains(&b) {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        self.url(false, &format!("/room#{encoded}"))
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url(false, "/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_people_type() {
        let table: &[(&str, bool, &str, u16, &str)] = &[
            ("keksbox.local", true, "keksbox.local", 443, ""),
            ("keksbox.local:8443", true, "keksbox.local", 8443, ""),
            ("https://KeksBox.local/", true, "keksbox.local", 443, ""),
            ("wss://meet.example/signaling", true, "meet.example", 443, ""),
            ("ws://127.0.0.1:8080", false, "127.0.0.1", 8080, ""),
            (
                "http://127.0.0.1:8080/meet/signaling",
                false,
                "127.0.0.1",
                8080,
                "/meet",
            ),
            ("https://[::1]:8443", true, "::1", 8443, ""),
            ("https://example.org/meet/", true, "example.org", 443, "/meet"),
        ];
        for &(input, tls, host, port, base) in table {
            let s: Server = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (s.tls, s.host.as_str(), s.port, s.base_path.as_str()),
                (tls, host, port, base),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        assert!(matches!("ftp://x".parse::<Server>(), Err(ServerParseError::Scheme(_))));
        assert!(matches!("https://".parse::<Server>(), Err(ServerParseError::NoHost(_))));
        assert!(matches!("host:99999".parse::<Server>(), Err(ServerParseError::Port(_))));
        assert!(matches!("host:0".parse::<Server>(), Err(ServerParseError::Port(_))));
        for bad in [
            "",
            "two words",
            "https://u@host",
            "host?x",
            "ex ample",
            "a..b",
            "bad_host!",
        ] {
            assert!(bad.parse::<Server>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls() {
        let s: Server = "https://keksbox.local".parse().unwrap();
        assert_eq!(s.signaling_url(), "wss://keksbox.local/signaling");
        assert_eq!(
            s.room_link("hello world#x"),
            "https://keksbox.local/room#hello%20world%23x"
        );
        let s: Server = "ws://[::1]:8080/m".parse().unwrap();
        assert_eq!(s.signaling_url(), "ws://[::1]:8080/m/signaling");
        assert_eq!(s.path("/config.json"), "/m/config.json");
        assert_eq!(s.to_string(), "http://[::1]:8080/m/");
    }
}
