//! The relay's room registry as a state machine without sockets, clocks or randomness.
//!
//! Each input (a client connecting, a packet from it, its disconnect) returns the packets to
//! send as [`Output`]s, in the order each recipient must receive them. The relay holds one
//! `Registry` behind a lock and delivers the outputs; tests drive it directly.
//!
//! Rules (docs/PROTOCOL.md, "What the server does"):
//! - on join every member, the newcomer included, gets `client_join` for the newcomer, then
//!   the newcomer gets `client_join` for each earlier member in join order; joining leaves the
//!   previous room first;
//! - on leave or disconnect the remaining members get `client_leave`;
//! - a relay goes to one member of the sender's room or to all others, never across rooms, and
//!   is dropped when the sender is in no room;
//! - `watch_rooms` answers at once with `room_info` for each watched room that exists, and
//!   every later change of a watched room's member count sends `room_info` to its watchers;
//! - a room is removed the moment its last member leaves.

use std::collections::{HashMap, HashSet};

use crate::packets::{ClientId, ClientboundPacket, RoomHash, ServerboundPacket};

/// A packet and the clients that get it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub to: Vec<ClientId>,
    pub packet: ClientboundPacket,
}

/// Limits the registry enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How many room hashes one client may watch.
    pub max_watched_rooms: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_watched_rooms: 64 }
    }
}

/// Why an input was refused. The relay closes the offending connection; nobody else notices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// `connect` with an id that is already connected (the caller draws another).
    #[error("client id {0} is already in use")]
    DuplicateId(ClientId),
    /// An input for an id that never connected or already disconnected.
    #[error("client {0} is not connected")]
    UnknownClient(ClientId),
    /// `watch_rooms` with more hashes than allowed.
    #[error("client watches {count} rooms, at most {limit} are allowed")]
    TooManyWatches { count: usize, limit: usize },
}

#[derive(Debug, Default)]
struct Client {
    room: Option<RoomHash>,
    watches: Vec<RoomHash>,
}

/// All rooms, members and watches of one relay.
#[derive(Debug)]
pub struct Registry {
    version: String,
    limits: Limits,
    clients: HashMap<ClientId, Client>,
    /// Members of each non-empty room, in join order.
    rooms: HashMap<RoomHash, Vec<ClientId>>,
    /// Who watches each hash; entries exist only while somebody watches.
    watchers: HashMap<RoomHash, HashSet<ClientId>>,
}

impl Registry {
    /// A registry whose `init` packets carry `version`.
    pub fn new(version: impl Into<String>, limits: Limits) -> Self {
        Registry {
            version: version.into(),
            limits,
            clients: HashMap::new(),
            rooms: HashMap::new(),
            watchers: HashMap::new(),
        }
    }

    /// A new connection with a fresh id: it gets `init`.
    pub fn connect(&mut self, id: ClientId) -> Result<Vec<Output>, RegistryError> {
        if self.clients.contains_key(&id) {
            return Err(RegistryError::DuplicateId(id));
        }
        self.clients.insert(id, Client::default());
        Ok(vec![Output {
            to: vec![id],
            packet: ClientboundPacket::Init {
                your_id: id,
                version: self.version.clone(),
            },
        }])
    }

    /// A packet from a connected client.
    pub fn handle(&mut self, id: ClientId, packet: ServerboundPacket) -> Result<Vec<Output>, RegistryError> {
        if !self.clients.contains_key(&id) {
            return Err(RegistryError::UnknownClient(id));
        }
        let mut out = Vec::new();
        match packet {
            ServerboundPacket::Ping(()) => {}
            ServerboundPacket::Join { hash } => {
                self.leave(id, &mut out);
                if let Some(hash) = hash {
                    self.join(id, hash, &mut out);
                }
            }
            ServerboundPacket::Relay { recipient, message } => self.relay(id, recipient, message, &mut out),
            ServerboundPacket::WatchRooms(hashes) => self.watch(id, hashes, &mut out)?,
        }
        Ok(out)
    }

    /// The connection is gone: it leaves its room and stops watching.
    pub fn disconnect(&mut self, id: ClientId) -> Vec<Output> {
        let mut out = Vec::new();
        self.leave(id, &mut out);
        if let Some(client) = self.clients.remove(&id) {
            self.unwatch(id, &client.watches);
        }
        out
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Number of non-empty rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Members of a room in join order (empty when the room does not exist).
    pub fn members(&self, hash: &RoomHash) -> &[ClientId] {
        self.rooms.get(hash).map(Vec::as_slice).unwrap_or_default()
    }

    /// Number of hashes that somebody watches.
    pub fn watched_count(&self) -> usize {
        self.watchers.len()
    }

    fn join(&mut self, id: ClientId, hash: RoomHash, out: &mut Vec<Output>) {
        let members = self.rooms.entry(hash).or_default();
        members.push(id);
        out.push(Output {
            to: members.clone(),
            packet: ClientboundPacket::ClientJoin { id },
        });
        for &earlier in &members[..members.len() - 1] {
            out.push(Output {
                to: vec![id],
                packet: ClientboundPacket::ClientJoin { id: earlier },
            });
        }
        let count = members.len();
        if let Some(client) = self.clients.get_mut(&id) {
            client.room = Some(hash);
        }
        self.room_info(hash, count, out);
    }

    fn leave(&mut self, id: ClientId, out: &mut Vec<Output>) {
        let Some(hash) = self.clients.get_mut(&id).and_then(|c| c.room.take()) else {
            return;
        };
        let Some(members) = self.rooms.get_mut(&hash) else {
            return;
        };
        members.retain(|&m| m != id);
        let count = members.len();
        if count == 0 {
            self.rooms.remove(&hash);
        } else {
            out.push(Output {
                to: members.clone(),
                packet: ClientboundPacket::ClientLeave { id },
            });
        }
        self.room_info(hash, count, out);
    }

    fn relay(&mut self, id: ClientId, recipient: Option<ClientId>, message: String, out: &mut Vec<Output>) {
        let Some(hash) = self.clients.get(&id).and_then(|c| c.room) else {
            return;
        };
        let members = self.members(&hash);
        let to = match recipient {
            Some(r) if members.contains(&r) => vec![r],
            Some(_) => return,
            None => {
                // Sized at once: this runs for every relayed message.
                let mut to = Vec::with_capacity(members.len());
                to.extend(members.iter().copied().filter(|&m| m != id));
                to
            }
        };
        if !to.is_empty() {
            out.push(Output {
                to,
                packet: ClientboundPacket::Message { sender: id, message },
            });
        }
    }

    fn watch(&mut self, id: ClientId, mut hashes: Vec<RoomHash>, out: &mut Vec<Output>) -> Result<(), RegistryError> {
        // Bounded before it is sorted: the relay holds its lock while this runs. (A list
        // over the limit is refused even when duplicates would bring it under.)
        if hashes.len() > self.limits.max_watched_rooms {
            return Err(RegistryError::TooManyWatches {
                count: hashes.len(),
                limit: self.limits.max_watched_rooms,
            });
        }
        hashes.sort_unstable();
        hashes.dedup();
        let old = match self.clients.get_mut(&id) {
            Some(client) => std::mem::replace(&mut client.watches, hashes.clone()),
            None => return Err(RegistryError::UnknownClient(id)),
        };
        self.unwatch(id, &old);
        for hash in hashes {
            self.watchers.entry(hash).or_default().insert(id);
            if let Some(members) = self.rooms.get(&hash) {
                out.push(Output {
                    to: vec![id],
                    packet: ClientboundPacket::RoomInfo {
                        hash,
                        user_count: members.len(),
                    },
                });
            }
        }
        Ok(())
    }

    fn unwatch(&mut self, id: ClientId, hashes: &[RoomHash]) {
        for hash in hashes {
            if let Some(set) = self.watchers.get_mut(hash) {
                set.remove(&id);
                if set.is_empty() {
                    self.watchers.remove(hash);
                }
            }
        }
    }

    fn room_info(&self, hash: RoomHash, user_count: usize, out: &mut Vec<Output>) {
        if let Some(watchers) = self.watchers.get(&hash) {
            let mut to: Vec<ClientId> = watchers.iter().copied().collect();
            to.sort_unstable();
            out.push(Output {
                to,
                packet: ClientboundPacket::RoomInfo { hash, user_count },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientboundPacket as C;
    use ServerboundPacket as S;

    fn h(c: char) -> RoomHash {
        c.to_string().repeat(64).parse().expect("valid hex")
    }

    /// Flattens outputs into (recipient, packet) in delivery order.
    fn flat(out: Vec<Output>) -> Vec<(u64, C)> {
        out.into_iter()
            .flat_map(|o| o.to.into_iter().map(move |to| (to.0, o.packet.clone())))
            .collect()
    }

    fn reg() -> Registry {
        Registry::new("test", Limits { max_watched_rooms: 3 })
    }

    fn connect(r: &mut Registry, ids: &[u64]) {
        for &id in ids {
            r.connect(ClientId(id)).expect("fresh id");
        }
    }

    fn join(r: &mut Registry, id: u64, room: char) -> Vec<(u64, C)> {
        flat(
            r.handle(ClientId(id), S::Join { hash: Some(h(room)) })
                .expect("connected"),
        )
    }

    fn cj(id: u64) -> C {
        C::ClientJoin { id: ClientId(id) }
    }

    fn cl(id: u64) -> C {
        C::ClientLeave { id: ClientId(id) }
    }

    #[test]
    fn connect_sends_init_and_rejects_duplicates() {
        let mut r = reg();
        let out = r.connect(ClientId(9)).expect("fresh");
        assert_eq!(
            flat(out),
            vec![(
                9,
                C::Init {
                    your_id: ClientId(9),
                    version: "test".into()
                }
            )]
        );
        assert_eq!(r.connect(ClientId(9)), Err(RegistryError::DuplicateId(ClientId(9))));
        assert_eq!(
            r.handle(ClientId(1), S::Ping(())),
            Err(RegistryError::UnknownClient(ClientId(1)))
        );
    }

    #[test]
    fn join_fan_out_order() {
        let mut r = reg();
        connect(&mut r, &[1, 2, 3]);
        assert_eq!(join(&mut r, 1, 'a'), vec![(1, cj(1))]);
        assert_eq!(join(&mut r, 2, 'a'), vec![(1, cj(2)), (2, cj(2)), (2, cj(1))]);
        assert_eq!(
            join(&mut r, 3, 'a'),
            vec![(1, cj(3)), (2, cj(3)), (3, cj(3)), (3, cj(1)), (3, cj(2))]
        );
    }

    #[test]
    fn switching_rooms_leaves_the_old_one_first() {
        let mut r = reg();
        connect(&mut r, &[1, 2, 3]);
        join(&mut r, 1, 'a');
        join(&mut r, 2, 'a');
        join(&mut r, 3, 'b');
        assert_eq!(
            join(&mut r, 2, 'b'),
            vec![(1, cl(2)), (3, cj(2)), (2, cj(2)), (2, cj(3))]
        );
        assert_eq!(r.members(&h('a')), &[ClientId(1)]);
        let out = flat(r.handle(ClientId(1), S::Join { hash: None }).expect("connected"));
        assert_eq!(out, vec![]);
        assert_eq!(r.room_count(), 1, "room a is gone the moment it is empty");
    }

    #[test]
    fn disconnect_leaves_and_removes_empty_rooms() {
        let mut r = reg();
        connect(&mut r, &[1, 2]);
        join(&mut r, 1, 'a');
        join(&mut r, 2, 'a');
        assert_eq!(flat(r.disconnect(ClientId(1))), vec![(2, cl(1))]);
        assert_eq!(flat(r.disconnect(ClientId(2))), vec![]);
        assert_eq!((r.room_count(), r.client_count()), (0, 0));
        assert_eq!(flat(r.disconnect(ClientId(2))), vec![], "double disconnect is harmless");
    }

    #[test]
    fn relay_targets_and_isolation() {
        let mut r = reg();
        connect(&mut r, &[1, 2, 3, 4, 5]);
        join(&mut r, 1, 'a');
        join(&mut r, 2, 'a');
        join(&mut r, 3, 'a');
        join(&mut r, 4, 'b');
        let msg = |sender| C::Message {
            sender: ClientId(sender),
            message: "m".into(),
        };
        let relay = |r: &mut Registry, from, to: Option<u64>| {
            flat(
                r.handle(
                    ClientId(from),
                    S::Relay {
                        recipient: to.map(ClientId),
                        message: "m".into(),
                    },
                )
                .expect("connected"),
            )
        };
        assert_eq!(relay(&mut r, 1, None), vec![(2, msg(1)), (3, msg(1))]);
        assert_eq!(relay(&mut r, 1, Some(3)), vec![(3, msg(1))]);
        assert_eq!(relay(&mut r, 1, Some(4)), vec![], "never across rooms");
        assert_eq!(relay(&mut r, 1, Some(77)), vec![], "unknown recipient");
        assert_eq!(relay(&mut r, 4, None), vec![], "alone in a room");
        assert_eq!(relay(&mut r, 5, None), vec![], "in no room");
        assert_eq!(relay(&mut r, 5, Some(1)), vec![], "in no room, even with a recipient");
    }

    #[test]
    fn watches_report_now_and_on_every_change() {
        let mut r = reg();
        connect(&mut r, &[1, 2, 3, 9]);
        join(&mut r, 1, 'a');
        let info = |c, n| C::RoomInfo {
            hash: h(c),
            user_count: n,
        };
        let out = flat(
            r.handle(ClientId(9), S::WatchRooms(vec![h('a'), h('b'), h('a')]))
                .expect("ok"),
        );
        assert_eq!(out, vec![(9, info('a', 1))], "existing rooms only, duplicates once");
        assert_eq!(
            join(&mut r, 2, 'a'),
            vec![(1, cj(2)), (2, cj(2)), (2, cj(1)), (9, info('a', 2))]
        );
        assert_eq!(join(&mut r, 3, 'b'), vec![(3, cj(3)), (9, info('b', 1))]);
        assert_eq!(flat(r.disconnect(ClientId(3))), vec![(9, info('b', 0))]);
        // Replacing the set stops the old watches.
        r.handle(ClientId(9), S::WatchRooms(vec![h('b')])).expect("ok");
        assert_eq!(flat(r.disconnect(ClientId(2))), vec![(1, cl(2))]);
        r.disconnect(ClientId(9));
        assert_eq!(r.watched_count(), 0);
    }

    #[test]
    fn watch_limit_is_enforced() {
        let mut r = reg();
        connect(&mut r, &[1]);
        let many = vec![h('1'), h('2'), h('3'), h('4')];
        assert_eq!(
            r.handle(ClientId(1), S::WatchRooms(many)),
            Err(RegistryError::TooManyWatches { count: 4, limit: 3 })
        );
        assert_eq!(r.watched_count(), 0);
    }

    #[test]
    fn rejoining_the_same_room_is_a_leave_and_a_join() {
        let mut r = reg();
        connect(&mut r, &[1, 2]);
        join(&mut r, 1, 'a');
        join(&mut r, 2, 'a');
        assert_eq!(
            join(&mut r, 2, 'a'),
            vec![(1, cl(2)), (1, cj(2)), (2, cj(2)), (2, cj(1))]
        );
    }
}
