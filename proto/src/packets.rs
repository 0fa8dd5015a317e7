//! Wire types of the keks-meet signaling protocol.
//!
//! Two layers travel over the WebSocket: the plaintext packets the relay understands
//! ([`ServerboundPacket`], [`ClientboundPacket`]) and, sealed inside their `message` strings,
//! the end-to-end encrypted [`RelayMessageWrapper`] that only room members can read.
//!
//! Serialisation is byte-for-byte what keks-meet produces (externally tagged, snake_case,
//! `{"ping":null}`, an absent `recipient` for broadcasts). Parsing is lenient where the
//! protocol grows: an unknown clientbound packet, relay message or resource kind becomes an
//! `Unknown` value that a receiver ignores, never an error that would drop a room.

use std::fmt;
use std::str::FromStr;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The relay's identifier for one connection. Numbers stay below 2^53 so JavaScript's
/// `number` holds them exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(pub u64);

impl ClientId {
    /// The largest id a JavaScript number represents exactly (2^53 - 1).
    pub const MAX_SAFE: u64 = (1 << 53) - 1;
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A room's public name on the relay: 32 bytes, written as 64 lowercase hex characters.
/// Derived from the room secret by [`crate::crypto::room_hash`]; the relay never sees more.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomHash(pub [u8; 32]);

/// Why a string is not a [`RoomHash`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomHashError {
    /// The string does not have exactly 64 characters.
    #[error("room hash must be 64 hex characters, got {0}")]
    Length(usize),
    /// A character is not a lowercase hex digit.
    #[error("room hash contains a character that is not a lowercase hex digit")]
    NotHex,
}

impl FromStr for RoomHash {
    type Err = RoomHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(RoomHashError::Length(bytes.len()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Ok(RoomHash(out))
    }
}

fn hex_value(c: u8) -> Result<u8, RoomHashError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(RoomHashError::NotHex),
    }
}

impl fmt::Display for RoomHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RoomHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomHash({self})")
    }
}

impl Serialize for RoomHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RoomHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// What a client sends to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerboundPacket {
    /// Join (or switch to) a room; `None` leaves the current room.
    Join { hash: Option<RoomHash> },
    /// Keep-alive, sent every 30 s. Serialises as `{"ping":null}`.
    Ping(()),
    /// Forward an opaque sealed message to one member (`recipient`) or every other member.
    Relay {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recipient: Option<ClientId>,
        message: String,
    },
    /// Replace the set of rooms whose member count this client wants to follow.
    WatchRooms(Vec<RoomHash>),
}

/// What the relay sends to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientboundPacket {
    /// First packet of every connection.
    Init { your_id: ClientId, version: String },
    /// A member appeared in the room (the receiver itself included).
    ClientJoin { id: ClientId },
    /// A member left the room.
    ClientLeave { id: ClientId },
    /// A sealed message relayed from `sender`.
    Message { sender: ClientId, message: String },
    /// The member count of a watched room.
    RoomInfo { hash: RoomHash, user_count: usize },
    /// A packet kind this implementation does not know (from a newer relay). Never sent.
    #[serde(skip)]
    Unknown { kind: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum KnownClientbound {
    Init { your_id: ClientId, version: String },
    ClientJoin { id: ClientId },
    ClientLeave { id: ClientId },
    Message { sender: ClientId, message: String },
    RoomInfo { hash: RoomHash, user_count: usize },
}

const CLIENTBOUND_KINDS: &[&str] = &["init", "client_join", "client_leave", "message", "room_info"];

impl<'de> Deserialize<'de> for ClientboundPacket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(
            match lenient::<KnownClientbound, D::Error>(Map::deserialize(d)?, CLIENTBOUND_KINDS)? {
                Lenient::Unknown(kind) => ClientboundPacket::Unknown { kind },
                Lenient::Known(k) => match k {
                    KnownClientbound::Init { your_id, version } => ClientboundPacket::Init { your_id, version },
                    KnownClientbound::ClientJoin { id } => ClientboundPacket::ClientJoin { id },
                    KnownClientbound::ClientLeave { id } => ClientboundPacket::ClientLeave { id },
                    KnownClientbound::Message { sender, message } => ClientboundPacket::Message { sender, message },
                    KnownClientbound::RoomInfo { hash, user_count } => ClientboundPacket::RoomInfo { hash, user_count },
                },
            },
        )
    }
}

/// The plaintext inside a sealed `message`: who sent it (checked against the relay's stamp)
/// and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayMessageWrapper {
    pub sender: ClientId,
    pub inner: RelayMessage,
}

/// A resource identifier chosen by its provider; never reused for a new resource. For a
/// track it is the MediaStream id, for a file the data channel label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceId(pub String);

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// End-to-end encrypted messages between room members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayMessage {
    /// A chat line: text or an image as a data URL.
    Chat(ChatMessage),
    /// The sender's display name; sent to each member on join and to newcomers.
    Identify { username: String },
    /// Announces a resource the sender offers; nothing flows until it is requested.
    Provide(ProvideInfo),
    /// Asks the provider to start sending resource `id` to the sender.
    Request { id: ResourceId },
    /// Asks the provider to stop sending resource `id`.
    RequestStop { id: ResourceId },
    /// Resource `id` is gone.
    ProvideStop { id: ResourceId },
    /// An SDP offer.
    Offer(String),
    /// An SDP answer.
    Answer(String),
    /// A trickled ICE candidate.
    IceCandidate(IceCandidate),
    /// A low-rate thumbnail of a video resource, as a data URL.
    Preview { id: ResourceId, data: String },
    /// A message kind this implementation does not know; receivers ignore it. Never sent.
    #[serde(skip)]
    Unknown { kind: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum KnownRelayMessage {
    Chat(ChatMessage),
    Identify { username: String },
    Provide(ProvideInfo),
    Request { id: ResourceId },
    RequestStop { id: ResourceId },
    ProvideStop { id: ResourceId },
    Offer(String),
    Answer(String),
    IceCandidate(IceCandidate),
    Preview { id: ResourceId, data: String },
}

const RELAY_KINDS: &[&str] = &[
    "chat",
    "identify",
    "provide",
    "request",
    "request_stop",
    "provide_stop",
    "offer",
    "answer",
    "ice_candidate",
    "preview",
];

impl<'de> Deserialize<'de> for RelayMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use KnownRelayMessage as K;
        Ok(match lenient::<K, D::Error>(Map::deserialize(d)?, RELAY_KINDS)? {
            Lenient::Unknown(kind) => RelayMessage::Unknown { kind },
            Lenient::Known(k) => match k {
                K::Chat(c) => RelayMessage::Chat(c),
                K::Identify { username } => RelayMessage::Identify { username },
                K::Provide(p) => RelayMessage::Provide(p),
                K::Request { id } => RelayMessage::Request { id },
                K::RequestStop { id } => RelayMessage::RequestStop { id },
                K::ProvideStop { id } => RelayMessage::ProvideStop { id },
                K::Offer(s) => RelayMessage::Offer(s),
                K::Answer(s) => RelayMessage::Answer(s),
                K::IceCandidate(c) => RelayMessage::IceCandidate(c),
                K::Preview { id, data } => RelayMessage::Preview { id, data },
            },
        })
    }
}

/// A chat line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatMessage {
    /// Plain text, to be shown as text (never as markup).
    Text(String),
    /// An image as a `data:` URL.
    Image(String),
}

/// A `provide` announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvideInfo {
    pub id: ResourceId,
    pub kind: ResourceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_kind: Option<TrackKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// What kind of resource a `provide` announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// A media track, delivered with a MediaStream whose id is the resource id.
    Track,
    /// A file, delivered on a data channel labelled with the resource id.
    File,
    /// A TCP port a native client exposes (a keksbox extension, docs/PROTOCOL.md): one data
    /// channel labelled with the resource id per request, each carrying one TCP connection.
    /// Browsers ignore it like any kind they do not know.
    Port,
    /// A kind from a newer client; ignore the resource. Never sent.
    #[serde(other, skip_serializing)]
    Unknown,
}

/// The media kind of a track resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
    /// A media kind from a newer client. Never sent.
    #[serde(other, skip_serializing)]
    Unknown,
}

/// An ICE candidate in the shape of `RTCIceCandidate.toJSON()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// Optional in `RTCIceCandidateInit`; missing means empty (end of candidates).
    #[serde(default)]
    pub candidate: String,
    #[serde(rename = "sdpMid", default)]
    pub sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", default)]
    pub sdp_m_line_index: Option<u16>,
    #[serde(rename = "usernameFragment", default)]
    pub username_fragment: Option<String>,
}

enum Lenient<T> {
    Known(T),
    Unknown(String),
}

/// Parses a one-key object as `T` when the key is one of `known`, and reports the key
/// otherwise. Malformed content under a known key is an error; an unknown key is not.
fn lenient<T: DeserializeOwned, E: serde::de::Error>(map: Map<String, Value>, known: &[&str]) -> Result<Lenient<T>, E> {
    if map.len() != 1 {
        return Err(E::custom(format_args!(
            "expected an object with exactly one key, got {}",
            map.len()
        )));
    }
    let Some(kind) = map.keys().next() else {
        return Err(E::custom("expected an object with exactly one key"));
    };
    if !known.contains(&kind.as_str()) {
        return Ok(Lenient::Unknown(kind.clone()));
    }
    serde_json::from_value(Value::Object(map))
        .map(Lenient::Known)
        .map_err(E::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(c: char) -> RoomHash {
        c.to_string().repeat(64).parse().expect("valid hex")
    }

    #[test]
    fn serverbound_json_is_byte_exact() {
        let cases = [
            (ServerboundPacket::Ping(()), r#"{"ping":null}"#),
            (ServerboundPacket::Join { hash: None }, r#"{"join":{"hash":null}}"#),
            (
                ServerboundPacket::Join { hash: Some(hash('a')) },
                &format!(r#"{{"join":{{"hash":"{}"}}}}"#, "a".repeat(64)),
            ),
            (
                ServerboundPacket::Relay {
                    recipient: None,
                    message: "x".into(),
                },
                r#"{"relay":{"message":"x"}}"#,
            ),
            (
                ServerboundPacket::Relay {
                    recipient: Some(ClientId(3)),
                    message: "x".into(),
                },
                r#"{"relay":{"recipient":3,"message":"x"}}"#,
            ),
            (ServerboundPacket::WatchRooms(vec![]), r#"{"watch_rooms":[]}"#),
        ];
        for (packet, json) in cases {
            assert_eq!(serde_json::to_string(&packet).expect("serialises"), json);
            assert_eq!(serde_json::from_str::<ServerboundPacket>(json).expect("parses"), packet);
        }
    }

    #[test]
    fn null_recipient_means_broadcast() {
        let p: ServerboundPacket =
            serde_json::from_str(r#"{"relay":{"recipient":null,"message":"m"}}"#).expect("parses");
        assert_eq!(
            p,
            ServerboundPacket::Relay {
                recipient: None,
                message: "m".into()
            }
        );
    }

    #[test]
    fn bad_serverbound_packets_are_errors() {
        for bad in [
            "",
            "null",
            "[]",
            r#"{"ping":null,"join":{"hash":null}}"#,
            r#"{"launch_missiles":{}}"#,
            r#"{"join":{"hash":"abc"}}"#,
            r#"{"join":{"hash":"ABCDEF0000000000000000000000000000000000000000000000000000000000"}}"#,
            r#"{"relay":{"recipient":"3","message":"x"}}"#,
            r#"{"relay":{"recipient":-1,"message":"x"}}"#,
            r#"{"watch_rooms":"x"}"#,
        ] {
            assert!(
                serde_json::from_str::<ServerboundPacket>(bad).is_err(),
                "{bad} should not parse"
            );
        }
    }

    #[test]
    fn unknown_clientbound_kind_is_tolerated() {
        let p: ClientboundPacket = serde_json::from_str(r#"{"server_hug":{"strength":3}}"#).expect("parses");
        assert_eq!(
            p,
            ClientboundPacket::Unknown {
                kind: "server_hug".into()
            }
        );
        assert!(serde_json::from_str::<ClientboundPacket>(r#"{"init":{"your_id":"x"}}"#).is_err());
    }

    #[test]
    fn unknown_relay_kinds_and_fields_are_tolerated() {
        let m: RelayMessage = serde_json::from_str(r#"{"poke":{"times":2}}"#).expect("parses");
        assert_eq!(m, RelayMessage::Unknown { kind: "poke".into() });
        let m: RelayMessage = serde_json::from_str(r#"{"identify":{"username":"a","avatar":"x"}}"#).expect("parses");
        assert_eq!(m, RelayMessage::Identify { username: "a".into() });
        let m: RelayMessage =
            serde_json::from_str(r#"{"provide":{"id":"h","kind":"hologram","label":"3d"}}"#).expect("parses");
        let RelayMessage::Provide(p) = m else {
            panic!("expected provide")
        };
        assert_eq!(p.kind, ResourceKind::Unknown);
        let m: RelayMessage =
            serde_json::from_str(r#"{"provide":{"id":"t","kind":"track","track_kind":"smell"}}"#).expect("parses");
        let RelayMessage::Provide(p) = m else {
            panic!("expected provide")
        };
        assert_eq!(p.track_kind, Some(TrackKind::Unknown));
    }

    #[test]
    fn a_port_resource_round_trips() {
        let wire = r#"{"provide":{"id":"web","kind":"port","label":"tcp 8080"}}"#;
        let m: RelayMessage = serde_json::from_str(wire).expect("parses");
        let RelayMessage::Provide(p) = &m else {
            panic!("expected provide")
        };
        assert_eq!((p.kind, p.label.as_deref()), (ResourceKind::Port, Some("tcp 8080")));
        assert_eq!(serde_json::to_string(&m).expect("serialises"), wire);
    }

    #[test]
    fn ice_candidate_fields_are_optional_as_in_rtc_ice_candidate_init() {
        let m: RelayMessage = serde_json::from_str(r#"{"ice_candidate":{}}"#).expect("parses");
        let RelayMessage::IceCandidate(c) = m else {
            panic!("expected a candidate")
        };
        assert_eq!((c.candidate.as_str(), c.sdp_mid, c.sdp_m_line_index), ("", None, None));
    }

    #[test]
    fn unknown_values_are_not_serialised_as_known_ones() {
        assert!(serde_json::to_string(&RelayMessage::Unknown { kind: "x".into() }).is_err());
        assert!(serde_json::to_string(&ResourceKind::Unknown).is_err());
    }

    #[test]
    fn room_hash_round_trips_and_rejects_garbage() {
        let h = hash('7');
        assert_eq!(h.to_string().parse::<RoomHash>(), Ok(h));
        assert_eq!("ab".parse::<RoomHash>(), Err(RoomHashError::Length(2)));
        assert_eq!("g".repeat(64).parse::<RoomHash>(), Err(RoomHashError::NotHex));
        assert_eq!("é".repeat(32).parse::<RoomHash>(), Err(RoomHashError::NotHex));
    }
}
