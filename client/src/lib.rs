//! keks-client: the async runtime keksbox's native clients (`rift`, `keksbox-peer`) share.
//!
//! It does the I/O; every protocol decision is a state machine in `keks-proto` (the way
//! `quinn` wraps `quinn-proto`).
//!
//! # Layout
//! - [`server`]: where the relay is ([`Server`]), parsed from what a person types, and the
//!   URLs derived from it.
//! - [`trust`]: certificate pinning by SHA-256 fingerprint and the trust-on-first-use store.
//! - [`connect`]: TCP plus TLS under a [`Trust`] policy.
//! - [`signaling`]: the WebSocket to the relay, with keep-alive pings and reconnection.
//! - [`config`]: the server's `/config.json` (ICE servers).
//! - [`discovery`]: finding boxes with mDNS (`_keksmeet._tcp`).
//! - [`stream`]: TCP connections bridged over data channels (the `port` resource).
//! - `transfer`: the tasks that move one file over one data channel.
//! - [`media`]: tracks we send (camera, microphone): encoded samples in, keyframe requests out.
//! - [`room`]: one task per room that owns the session, the negotiators and the WebRTC peer
//!   connections; an application drives it with commands and reads its events.
//!
//! # Data flow
//! ```text
//! relay <-wss-> signaling task <-channels-> room task (Session, Negotiators, Resources)
//!                                                 |  webrtc callbacks only send events in
//!                                                 v
//!                                   PeerConnection per member (data channels, tracks)
//! application (rift, keksbox-peer) <-Command / RoomEvent channels-> room task
//! ```

pub mod config;
pub mod connect;
pub mod discovery;
pub mod media;
pub mod room;
pub mod server;
pub mod signaling;
pub mod stream;
mod transfer;
pub mod trust;
pub mod udp;

pub use media::{Codec, MediaSample, TrackFeed};
pub use room::{Room, RoomEvent, RoomOptions};
pub use server::Server;
pub use trust::{KnownServers, Trust};
