//! keks-proto: the keks-meet signaling protocol, shared by the keksbox relay and the native
//! clients (`rift`, `keksbox-peer`). No I/O lives here.
//!
//! # Layout
//! - [`advert`]: what a box announces and clients pin: the certificate fingerprint, the
//!   `_keksmeet._tcp` TXT record, the signaling path, the keep-alive interval.
//! - [`packets`]: the wire types. Relay packets ([`packets::ServerboundPacket`],
//!   [`packets::ClientboundPacket`]) travel as JSON text frames on `/signaling`; their
//!   `message` strings carry a sealed [`packets::RelayMessageWrapper`].
//! - [`crypto`] (feature `crypto`, on by default): the room key and room hash derived from
//!   the room secret, and sealing / opening relay messages.
//! - [`room`]: the relay's room registry as a state machine: inputs (connect, packets,
//!   disconnect) return the packets to deliver. The relay is a thin async shell around it.
//! - [`session`]: a peer's view of a room as a state machine: it turns relay traffic into
//!   events (members, names, resources, chat, negotiation) and local intents into sealed
//!   messages to send. Native clients put their WebRTC glue around it.
//! - [`negotiation`]: perfect negotiation with one peer (glare, explicit rollback, early ICE
//!   candidates) as a state machine for WebRTC stacks without implicit rollback.
//! - [`resources`]: which remote resources we requested and which arrived (tracks by stream
//!   id, data channels by label, anything unrequested refused), and who receives each of ours.
//! - [`file`](mod@file): file transfer framing on a data channel (binary chunks, then `end`), the
//!   receiver's verdict (complete / failed) and the flow-control watermarks.
//!
//! # Data flow
//! ```text
//! secret --crypto--> (RoomKey, RoomHash)
//! client --ServerboundPacket--> relay: Registry --Output{to, ClientboundPacket}--> clients
//! Session::handle_packet(ClientboundPacket) -> [Event], [Transmit]   (peers, with crypto)
//! ```

pub mod advert;
#[cfg(feature = "crypto")]
pub mod crypto;
pub mod file;
pub mod negotiation;
pub mod packets;
pub mod resources;
pub mod room;
#[cfg(feature = "crypto")]
pub mod session;

/// The protocol this crate speaks, announced in mDNS TXT records and `/version`.
pub const PROTOCOL_VERSION: u32 = 1;
