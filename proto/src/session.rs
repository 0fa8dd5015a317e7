//! A peer's view of a room as a state machine, for native clients (`rift`, `keksbox-peer`).
//!
//! [`Session::handle`] takes each [`ClientboundPacket`] from the relay and returns
//! [`Output`]s: packets to send back (already sealed) and [`Event`]s for the client's own
//! logic (a member appeared, a resource was requested, an SDP offer arrived...). Local intents
//! (provide a resource, request one, chat, negotiation messages) are methods that return the
//! packets to send. There is no I/O, no clock and no WebRTC here: the client wraps its
//! WebRTC stack around the events, the way the web client's UI wraps its protocol module.
//!
//! Rules it keeps (docs/PROTOCOL.md), the same as the web client's `Room`
//! (`web/src/protocol/room.ts`); both run the scenario fixtures in
//! `proto/tests/data/session/` so they cannot drift:
//! - on `init` it joins the room. A later `init` is a new relay session (a reconnect): every
//!   member we knew is reported as [`Event::Left`] (ascending id) before the join.
//! - to each member that appears afterwards (the ones already there and every newcomer) it
//!   sends `identify` and a `provide` for each local resource; a `client_join` for a member
//!   we know already changes nothing;
//! - user names are cleaned: control characters removed, then cut to [`MAX_USERNAME_CHARS`]
//!   characters (Unicode scalar values) ([`clean_username`]);
//! - a re-sent `provide` for an id we know updates it and is reported as
//!   [`Event::ProvideUpdated`], not as a second [`Event::Provided`]; a provide of a kind we do
//!   not know (or a track of an unknown media kind) is ignored; a member may have at most
//!   [`MAX_RESOURCES_PER_MEMBER`] resources; a file's `track_kind` is dropped;
//! - a message whose sealed sender differs from the relay's stamp, that does not open, that
//!   it does not understand, or that names a resource that does not exist (`provide_stop`,
//!   `request`, `request_stop`, `preview`) is reported as [`Event::Ignored`] and changes
//!   nothing;
//! - resources flow only on request: [`Event::Requested`] tells the client to start.

use std::collections::BTreeMap;

use crate::crypto::{RoomKey, SealError, room_hash};
use crate::packets::{
    ChatMessage, ClientId, ClientboundPacket, IceCandidate, ProvideInfo, RelayMessage, ResourceId, ResourceKind,
    RoomHash, ServerboundPacket, TrackKind,
};
pub use crate::resources::MAX_RESOURCES_PER_MEMBER;

/// The longest user name kept, in characters (Unicode scalar values); longer ones are cut.
pub const MAX_USERNAME_CHARS: usize = 64;

/// A user name as shown: control characters removed, then cut to [`MAX_USERNAME_CHARS`].
pub fn clean_username(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_control())
        .take(MAX_USERNAME_CHARS)
        .collect()
}

/// Something the client should know or do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The relay accepted us; we joined the room as `id`.
    Ready {
        id: ClientId,
    },
    /// Another member appeared.
    Joined {
        id: ClientId,
    },
    /// A member told us its name.
    Identified {
        id: ClientId,
        username: String,
    },
    /// A member left; its resources are gone with it.
    Left {
        id: ClientId,
        resources: Vec<ResourceId>,
    },
    /// A member offers a resource.
    Provided {
        from: ClientId,
        info: ProvideInfo,
    },
    /// A member re-sent the `provide` of a resource we know: its description changed.
    ProvideUpdated {
        from: ClientId,
        info: ProvideInfo,
    },
    /// A member withdrew a resource.
    ProvideStopped {
        from: ClientId,
        id: ResourceId,
    },
    /// A member asks us to start sending one of our resources.
    Requested {
        from: ClientId,
        id: ResourceId,
    },
    /// A member asks us to stop sending one of our resources.
    RequestStopped {
        from: ClientId,
        id: ResourceId,
    },
    Chat {
        from: ClientId,
        message: ChatMessage,
    },
    Offer {
        from: ClientId,
        sdp: String,
    },
    Answer {
        from: ClientId,
        sdp: String,
    },
    IceCandidate {
        from: ClientId,
        candidate: IceCandidate,
    },
    Preview {
        from: ClientId,
        id: ResourceId,
        data: String,
    },
    /// Live member counts of a watched room.
    RoomInfo {
        hash: RoomHash,
        user_count: usize,
    },
    /// A message that was dropped, and why (bad ciphertext, forged sender, unknown kind,
    /// a request for a resource we do not have...). `from` is `None` for a relay packet.
    Ignored {
        from: Option<ClientId>,
        reason: String,
    },
}

/// One step's results, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(ServerboundPacket),
    Event(Event),
}

/// What we know of another member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    pub username: Option<String>,
    pub resources: BTreeMap<ResourceId, ProvideInfo>,
}

/// Why a local intent could not be turned into packets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The relay has not sent `init` yet, so we have no id to seal with.
    #[error("not connected to the relay yet")]
    NotReady,
    /// A resource with this id was provided before: identifiers are never reused.
    #[error("resource id {0} was already used")]
    ReusedId(ResourceId),
    /// No such local resource.
    #[error("no local resource {0}")]
    NoSuchResource(ResourceId),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// A member's session in one room.
#[derive(Debug)]
pub struct Session {
    key: RoomKey,
    hash: RoomHash,
    username: String,
    me: Option<ClientId>,
    members: BTreeMap<ClientId, Member>,
    local: BTreeMap<ResourceId, ProvideInfo>,
    /// Every id ever provided, so none is reused.
    used_ids: std::collections::BTreeSet<ResourceId>,
}

impl Session {
    /// A session for the room with `secret` (derives key and hash: ~0.4 s optimised).
    pub fn new(secret: &str, username: impl Into<String>) -> Self {
        Self::with_key(RoomKey::derive(secret), room_hash(secret), username)
    }

    /// A session with an already derived key and hash.
    pub fn with_key(key: RoomKey, hash: RoomHash, username: impl Into<String>) -> Self {
        Session {
            key,
            hash,
            username: username.into(),
            me: None,
            members: BTreeMap::new(),
            local: BTreeMap::new(),
            used_ids: Default::default(),
        }
    }

    pub fn id(&self) -> Option<ClientId> {
        self.me
    }

    pub fn hash(&self) -> RoomHash {
        self.hash
    }

    pub fn members(&self) -> &BTreeMap<ClientId, Member> {
        &self.members
    }

    /// In perfect negotiation with `peer`, whether we are the polite side (the one that
    /// rolls back its own offer on glare). The member with the lower id is polite; both
    /// sides compute the same answer from the ids the relay assigned.
    pub fn is_polite_towards(&self, peer: ClientId) -> bool {
        self.me.is_some_and(|me| me < peer)
    }

    /// Feeds one packet from the relay.
    pub fn handle(&mut self, packet: ClientboundPacket) -> Vec<Output> {
        let mut out = Vec::new();
        match packet {
            ClientboundPacket::Init { your_id, .. } => {
                self.me = Some(your_id);
                // A new relay session: everyone we knew is gone from our view until they
                // appear again.
                for (id, member) in std::mem::take(&mut self.members) {
                    let resources = member.resources.into_keys().collect();
                    out.push(Output::Event(Event::Left { id, resources }));
                }
                out.push(Output::Send(ServerboundPacket::Join { hash: Some(self.hash) }));
            }
            ClientboundPacket::ClientJoin { id } if Some(id) == self.me => {
                out.push(Output::Event(Event::Ready { id }));
            }
            ClientboundPacket::ClientJoin { id } if self.members.contains_key(&id) => {}
            ClientboundPacket::ClientJoin { id } => {
                self.members.insert(id, Member::default());
                out.push(Output::Event(Event::Joined { id }));
                self.greet(id, &mut out);
            }
            ClientboundPacket::ClientLeave { id } => {
                if let Some(member) = self.members.remove(&id) {
                    let resources = member.resources.into_keys().collect();
                    out.push(Output::Event(Event::Left { id, resources }));
                }
            }
            ClientboundPacket::Message { sender, message } => {
                let event = match self.key.open_message(sender, &message) {
                    Ok(inner) => self.on_message(sender, inner),
                    Err(e) => Event::Ignored {
                        from: Some(sender),
                        reason: e.to_string(),
                    },
                };
                out.push(Output::Event(event));
            }
            ClientboundPacket::RoomInfo { hash, user_count } => {
                out.push(Output::Event(Event::RoomInfo { hash, user_count }));
            }
            ClientboundPacket::Unknown { kind } => {
                out.push(Output::Event(Event::Ignored {
                    from: None,
                    reason: format!("unknown packet {kind:?}"),
                }));
            }
        }
        out
    }

    fn greet(&self, to: ClientId, out: &mut Vec<Output>) {
        let identify = RelayMessage::Identify {
            username: self.username.clone(),
        };
        let provides = self.local.values().cloned().map(RelayMessage::Provide);
        for message in std::iter::once(identify).chain(provides) {
            match self.seal(Some(to), &message) {
                Ok(p) => out.push(Output::Send(p)),
                Err(e) => out.push(Output::Event(Event::Ignored {
                    from: None,
                    reason: format!("cannot greet {to}: {e}"),
                })),
            }
        }
    }

    fn on_message(&mut self, from: ClientId, message: RelayMessage) -> Event {
        let Some(member) = self.members.get_mut(&from) else {
            return Event::Ignored {
                from: Some(from),
                reason: "message from a non-member".into(),
            };
        };
        let ignored = |reason: String| Event::Ignored {
            from: Some(from),
            reason,
        };
        match message {
            RelayMessage::Identify { username } => {
                let username = clean_username(&username);
                member.username = Some(username.clone());
                Event::Identified { id: from, username }
            }
            RelayMessage::Provide(mut info) => {
                let known_track = matches!(info.track_kind, Some(TrackKind::Audio | TrackKind::Video));
                match info.kind {
                    ResourceKind::Unknown => return ignored(format!("provide {} of an unknown kind", info.id)),
                    ResourceKind::Track if !known_track => {
                        return ignored(format!("provide {} of an unknown media kind", info.id));
                    }
                    ResourceKind::File => info.track_kind = None,
                    ResourceKind::Port => {
                        info.track_kind = None;
                        info.size = None;
                    }
                    ResourceKind::Track => {}
                }
                if let Some(known) = member.resources.get_mut(&info.id) {
                    *known = info.clone();
                    return Event::ProvideUpdated { from, info };
                }
                if member.resources.len() >= MAX_RESOURCES_PER_MEMBER {
                    return ignored(format!("more than {MAX_RESOURCES_PER_MEMBER} resources"));
                }
                member.resources.insert(info.id.clone(), info.clone());
                Event::Provided { from, info }
            }
            RelayMessage::ProvideStop { id } => match member.resources.remove(&id) {
                Some(_) => Event::ProvideStopped { from, id },
                None => ignored(format!("provide_stop for unknown resource {id}")),
            },
            RelayMessage::Request { id } if self.local.contains_key(&id) => Event::Requested { from, id },
            RelayMessage::RequestStop { id } if self.local.contains_key(&id) => Event::RequestStopped { from, id },
            RelayMessage::Request { id } | RelayMessage::RequestStop { id } => Event::Ignored {
                from: Some(from),
                reason: format!("request for unknown resource {id}"),
            },
            RelayMessage::Chat(message) => Event::Chat { from, message },
            RelayMessage::Offer(sdp) => Event::Offer { from, sdp },
            RelayMessage::Answer(sdp) => Event::Answer { from, sdp },
            RelayMessage::IceCandidate(candidate) => Event::IceCandidate { from, candidate },
            RelayMessage::Preview { id, data } if member.resources.contains_key(&id) => {
                Event::Preview { from, id, data }
            }
            RelayMessage::Preview { id, .. } => ignored(format!("preview for unknown resource {id}")),
            RelayMessage::Unknown { kind } => Event::Ignored {
                from: Some(from),
                reason: format!("unknown message {kind:?}"),
            },
        }
    }

    /// Announces a local resource to everyone (and to every later newcomer).
    pub fn provide(&mut self, info: ProvideInfo) -> Result<ServerboundPacket, SessionError> {
        if self.used_ids.contains(&info.id) {
            return Err(SessionError::ReusedId(info.id));
        }
        let packet = self.seal(None, &RelayMessage::Provide(info.clone()))?;
        self.used_ids.insert(info.id.clone());
        self.local.insert(info.id.clone(), info);
        Ok(packet)
    }

    /// Withdraws a local resource.
    pub fn provide_stop(&mut self, id: &ResourceId) -> Result<ServerboundPacket, SessionError> {
        if self.local.remove(id).is_none() {
            return Err(SessionError::NoSuchResource(id.clone()));
        }
        self.seal(None, &RelayMessage::ProvideStop { id: id.clone() })
    }

    /// Sends a relay message to one member, or to all with `None`.
    pub fn send(&self, to: Option<ClientId>, message: &RelayMessage) -> Result<ServerboundPacket, SessionError> {
        self.seal(to, message)
    }

    fn seal(&self, recipient: Option<ClientId>, message: &RelayMessage) -> Result<ServerboundPacket, SessionError> {
        let me = self.me.ok_or(SessionError::NotReady)?;
        let sealed = self.key.seal_message(me, message)?;
        Ok(ServerboundPacket::Relay {
            recipient,
            message: sealed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::{ResourceKind, TrackKind};
    use crate::room::{Limits, Registry};

    /// Two or more sessions wired through a real registry, in memory.
    struct Net {
        relay: Registry,
        peers: Vec<(ClientId, Session, Vec<Event>)>,
    }

    impl Net {
        fn new(secret_names: &[(&str, &str)]) -> Net {
            let key = RoomKey::from_bytes([9; 32]);
            let mut net = Net {
                relay: Registry::new("test", Limits::default()),
                peers: Vec::new(),
            };
            for (i, (secret, name)) in secret_names.iter().enumerate() {
                let hash = RoomHash([secret.len() as u8; 32]);
                let s = Session::with_key(key.clone(), hash, *name);
                let id = ClientId(10 + i as u64);
                net.peers.push((id, s, Vec::new()));
                let out = net.relay.connect(id).expect("fresh");
                net.deliver(out);
            }
            net
        }

        fn deliver(&mut self, outputs: Vec<crate::room::Output>) {
            let mut queue: std::collections::VecDeque<_> = outputs.into();
            while let Some(o) = queue.pop_front() {
                for to in o.to {
                    let Some(i) = self.peers.iter().position(|p| p.0 == to) else {
                        continue;
                    };
                    let results = self.peers[i].1.handle(o.packet.clone());
                    for r in results {
                        match r {
                            Output::Event(e) => self.peers[i].2.push(e),
                            Output::Send(p) => queue.extend(self.relay.handle(to, p).expect("connected")),
                        }
                    }
                }
            }
        }

        fn send(&mut self, i: usize, p: ServerboundPacket) {
            let id = self.peers[i].0;
            let out = self.relay.handle(id, p).expect("connected");
            self.deliver(out);
        }

        fn events(&mut self, i: usize) -> Vec<Event> {
            std::mem::take(&mut self.peers[i].2)
        }
    }

    fn camera(id: &str) -> ProvideInfo {
        ProvideInfo {
            id: ResourceId(id.into()),
            kind: ResourceKind::Track,
            track_kind: Some(TrackKind::Video),
            label: Some("Camera".into()),
            size: None,
        }
    }

    #[test]
    fn members_identify_each_other_and_learn_resources() {
        let mut net = Net::new(&[("room", "alice")]);
        let cam = net.peers[0].1.provide(camera("cam1")).expect("ready");
        net.send(0, cam);
        assert_eq!(net.events(0), vec![Event::Ready { id: ClientId(10) }]);

        // Bob joins later: alice greets him with her name and her camera.
        let key = RoomKey::from_bytes([9; 32]);
        net.peers.push((
            ClientId(11),
            Session::with_key(key, RoomHash([4; 32]), "bob"),
            Vec::new(),
        ));
        let out = net.relay.connect(ClientId(11)).expect("fresh");
        net.deliver(out);
        let bob = net.events(1);
        assert_eq!(bob[0], Event::Ready { id: ClientId(11) });
        assert!(bob.contains(&Event::Identified {
            id: ClientId(10),
            username: "alice".into()
        }));
        assert!(bob.contains(&Event::Provided {
            from: ClientId(10),
            info: camera("cam1")
        }));
        assert!(net.events(0).contains(&Event::Identified {
            id: ClientId(11),
            username: "bob".into()
        }));

        // Bob requests the camera; alice is told, and only alice.
        let req = net.peers[1].1.send(
            Some(ClientId(10)),
            &RelayMessage::Request {
                id: ResourceId("cam1".into()),
            },
        );
        net.send(1, req.expect("ready"));
        assert_eq!(
            net.events(0),
            vec![Event::Requested {
                from: ClientId(11),
                id: ResourceId("cam1".into())
            }]
        );

        // Chat both ways; a leave takes the resources along.
        let chat = net.peers[0]
            .1
            .send(None, &RelayMessage::Chat(ChatMessage::Text("hi".into())));
        net.send(0, chat.expect("ready"));
        assert_eq!(
            net.events(1),
            vec![Event::Chat {
                from: ClientId(10),
                message: ChatMessage::Text("hi".into())
            }]
        );
        let out = net.relay.disconnect(ClientId(10));
        net.deliver(out);
        assert_eq!(
            net.events(1),
            vec![Event::Left {
                id: ClientId(10),
                resources: vec![ResourceId("cam1".into())]
            }]
        );
        assert!(net.peers[1].1.members().is_empty());
    }

    #[test]
    fn ids_are_never_reused_and_unknown_requests_are_ignored() {
        let mut net = Net::new(&[("room", "a"), ("room", "b")]);
        net.events(0);
        net.events(1);
        net.peers[0].1.provide(camera("x")).expect("ready");
        net.peers[0].1.provide_stop(&ResourceId("x".into())).expect("exists");
        assert!(matches!(
            net.peers[0].1.provide(camera("x")),
            Err(SessionError::ReusedId(_))
        ));
        assert!(matches!(
            net.peers[0].1.provide_stop(&ResourceId("x".into())),
            Err(SessionError::NoSuchResource(_))
        ));
        let req = net.peers[1].1.send(
            Some(ClientId(10)),
            &RelayMessage::Request {
                id: ResourceId("x".into()),
            },
        );
        net.send(1, req.expect("ready"));
        assert!(matches!(
            &net.events(0)[..],
            [Event::Ignored {
                from: Some(ClientId(11)),
                ..
            }]
        ));
    }

    #[test]
    fn forged_undecryptable_and_unknown_messages_are_ignored() {
        let key = RoomKey::from_bytes([9; 32]);
        let mut s = Session::with_key(key.clone(), RoomHash([1; 32]), "me");
        s.handle(ClientboundPacket::Init {
            your_id: ClientId(1),
            version: "v".into(),
        });
        s.handle(ClientboundPacket::ClientJoin { id: ClientId(2) });
        let cases = [
            // Sealed as 3 but stamped by the relay as 2.
            key.seal_message(
                ClientId(3),
                &RelayMessage::Identify {
                    username: "evil".into(),
                },
            )
            .expect("seals"),
            RoomKey::from_bytes([8; 32])
                .seal_message(ClientId(2), &RelayMessage::Offer("x".into()))
                .expect("seals"),
            "bm90IGEgY2lwaGVydGV4dA==".to_owned(),
            key.seal(br#"{"sender":2,"inner":{"teleport":{}}}"#).expect("seals"),
        ];
        for message in cases {
            let out = s.handle(ClientboundPacket::Message {
                sender: ClientId(2),
                message,
            });
            assert!(
                matches!(
                    &out[..],
                    [Output::Event(Event::Ignored {
                        from: Some(ClientId(2)),
                        ..
                    })]
                ),
                "{out:?}"
            );
        }
        assert_eq!(s.members()[&ClientId(2)], Member::default(), "nothing changed");
        let out = s.handle(ClientboundPacket::Unknown { kind: "new".into() });
        assert!(matches!(&out[..], [Output::Event(Event::Ignored { from: None, .. })]));
    }

    #[test]
    fn politeness_is_decided_by_id_and_complementary() {
        let mut a = Session::with_key(RoomKey::from_bytes([1; 32]), RoomHash([1; 32]), "a");
        let mut b = Session::with_key(RoomKey::from_bytes([1; 32]), RoomHash([1; 32]), "b");
        assert!(!a.is_polite_towards(ClientId(5)), "not before init");
        a.handle(ClientboundPacket::Init {
            your_id: ClientId(4),
            version: "v".into(),
        });
        b.handle(ClientboundPacket::Init {
            your_id: ClientId(5),
            version: "v".into(),
        });
        assert_ne!(a.is_polite_towards(ClientId(5)), b.is_polite_towards(ClientId(4)));
    }

    #[test]
    fn usernames_lose_control_characters_and_are_cut_to_64_chars() {
        let cases = [
            ("alice", "alice".to_owned()),
            ("a\u{0}b\u{1b}c\u{7f}d\u{85}e\n", "abcde".to_owned()),
            (&"é".repeat(65), "é".repeat(64)),
            (&"🍪".repeat(100), "🍪".repeat(64)),
            // Cut after cleaning, so controls do not use up the length.
            (&format!("{}{}", "\u{1}".repeat(10), "x".repeat(64)), "x".repeat(64)),
            ("", String::new()),
        ];
        for (raw, want) in cases {
            assert_eq!(clean_username(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn a_member_has_a_bounded_number_of_resources() {
        let key = RoomKey::from_bytes([9; 32]);
        let mut s = Session::with_key(key.clone(), RoomHash([1; 32]), "me");
        s.handle(ClientboundPacket::Init {
            your_id: ClientId(1),
            version: "v".into(),
        });
        s.handle(ClientboundPacket::ClientJoin { id: ClientId(2) });
        let provide = |s: &mut Session, id: &str| {
            let message = key
                .seal_message(ClientId(2), &RelayMessage::Provide(camera(id)))
                .expect("seals");
            s.handle(ClientboundPacket::Message {
                sender: ClientId(2),
                message,
            })
        };
        for i in 0..MAX_RESOURCES_PER_MEMBER {
            let out = provide(&mut s, &i.to_string());
            assert!(matches!(&out[..], [Output::Event(Event::Provided { .. })]), "{out:?}");
        }
        let out = provide(&mut s, "one more");
        assert!(matches!(&out[..], [Output::Event(Event::Ignored { .. })]), "{out:?}");
        let out = provide(&mut s, "7");
        assert!(
            matches!(&out[..], [Output::Event(Event::ProvideUpdated { .. })]),
            "{out:?}"
        );
        assert_eq!(s.members()[&ClientId(2)].resources.len(), MAX_RESOURCES_PER_MEMBER);
    }

    #[test]
    fn nothing_is_sealed_before_init() {
        let mut s = Session::with_key(RoomKey::from_bytes([1; 32]), RoomHash([1; 32]), "a");
        assert!(matches!(s.provide(camera("c")), Err(SessionError::NotReady)));
        // A provide that failed did not use up its id.
        s.handle(ClientboundPacket::Init {
            your_id: ClientId(1),
            version: "v".into(),
        });
        assert!(s.provide(camera("c")).is_ok());
    }
}
