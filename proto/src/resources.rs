//! Resource bookkeeping of a peer: what flows between it and the other members.
//!
//! Resources are only ever sent on request (PROTOCOL.md): a member `provide`s, another
//! `request`s, and only then does the provider add the track or open the data channel. Two
//! halves keep that straight without any I/O:
//!
//! - [`RemoteResources`]: the resources others provide, per (member, id), each
//!   [`RemoteState::Available`] → [`RemoteState::Requested`] → [`RemoteState::Active`] →
//!   [`RemoteState::Stopped`] (and back to requested for another download). An incoming track
//!   is matched to its resource by the id of its MediaStream, an incoming data channel by its
//!   label; a track or channel nobody requested is refused ([`Incoming::Refuse`]: the client
//!   closes it).
//! - [`LocalResources`]: our own resources and who receives each, so that
//!   [`LocalResources::remove`] (`provide_stop`) returns the teardown per receiver, and a
//!   `request_stop` or a member leaving removes one receiver.
//!
//! A file or a track flows once per request at a time. A port (PROTOCOL.md, "Ports") carries
//! one TCP connection per request and data channel, several at once: each `request` is another
//! connection ([`RemoteResource::waiting`] on our side, one more flow of the receiver on the
//! provider's), each arriving channel takes one waiting request, and each connection ends on
//! its own ([`RemoteResources::ended`], [`LocalResources::ended`]).
//!
//! Neither half sends anything: the client relays `request` / `request_stop` / `provide_stop`
//! through [`crate::session::Session`] and performs the [`Teardown`]s on its peer connections.
//! Resource kinds this implementation does not know are kept (so a newer peer's resources can
//! be listed) but cannot be requested.

use std::collections::{BTreeMap, BTreeSet};

use crate::packets::{ClientId, ProvideInfo, ResourceId, ResourceKind};

/// How many resources one member may have announced at a time. keks-meet users offer a camera,
/// a microphone, a screen and some files; this bounds a member who announces without end.
pub const MAX_RESOURCES_PER_MEMBER: usize = 1024;
/// Connections to one member's port that may wait for their channel at a time. A provider
/// that opens none (it refused, or is busy) cannot make us hold requests without end.
pub const MAX_WAITING_CHANNELS: usize = 64;

/// Where a resource another member provides stands, seen from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteState {
    /// Announced; nothing flows.
    Available,
    /// We asked for it; the track or channel has not arrived yet (a port: no connection of
    /// it is open, at least one waits for its channel).
    Requested,
    /// The track or the file's data channel arrived and is flowing (a port: at least one
    /// connection is open).
    Active,
    /// It flowed and ended (a file arrived or failed, a track ended); it may be requested again.
    Stopped,
}

/// A resource another member provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteResource {
    pub info: ProvideInfo,
    pub state: RemoteState,
    /// A port: connections requested whose channel has not arrived yet. 0 for other kinds.
    pub waiting: usize,
    /// A port: connections whose channel arrived and that have not ended. 0 for other kinds.
    pub open: usize,
}

/// Something requested or flowing that the client must stop: remove the track sent to (or
/// ignore the track received from) `peer`, close the data channel(s), or drop what waits for
/// them, for resource `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Teardown {
    pub peer: ClientId,
    pub id: ResourceId,
    pub kind: ResourceKind,
}

/// Whether an incoming track or data channel is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// It belongs to this requested resource, which is now active.
    Accept(ResourceId),
    /// Nobody asked for it: close it.
    Refuse(Refusal),
}

/// Why an incoming track or data channel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No resource of that member has this id.
    #[error("no resource {0} was provided")]
    Unknown(ResourceId),
    /// The resource exists but we did not request it (or it already flows).
    #[error("resource {id} was not requested (it is {state:?})")]
    NotRequested { id: ResourceId, state: RemoteState },
    /// A track for a file resource, or a channel for a track resource.
    #[error("resource {id} is a {kind:?} resource, not delivered this way")]
    WrongKind { id: ResourceId, kind: ResourceKind },
}

/// Why a bookkeeping step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// No such resource (of that member, or of ours).
    #[error("no resource {0}")]
    Unknown(ResourceId),
    /// A kind from a newer client: we cannot receive it.
    #[error("resource {0} is of a kind this client does not know")]
    UnknownKind(ResourceId),
    /// Already requested or flowing.
    #[error("resource {0} is already requested")]
    AlreadyRequested(ResourceId),
    /// [`MAX_WAITING_CHANNELS`] connections to this port already wait for their channel.
    #[error("{MAX_WAITING_CHANNELS} connections to {0} already wait for the member to answer")]
    TooManyWaiting(ResourceId),
    /// Not requested, so there is nothing to stop.
    #[error("resource {0} is not requested")]
    NotRequested(ResourceId),
    /// We already send this resource to that member.
    #[error("resource {id} is already being sent to {peer}")]
    AlreadySending { peer: ClientId, id: ResourceId },
    /// A resource id of ours was used before: identifiers are never reused.
    #[error("resource id {0} was already used")]
    ReusedId(ResourceId),
    /// The member announced more than [`MAX_RESOURCES_PER_MEMBER`] resources.
    #[error("member {0} provides too many resources")]
    TooMany(ClientId),
}

/// Whether a `provide` announced something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provided {
    /// A resource we did not know.
    New,
    /// A re-sent `provide` for a known id: its description was updated, its state kept.
    Updated,
}

/// The resources other members provide.
#[derive(Debug, Default)]
pub struct RemoteResources {
    members: BTreeMap<ClientId, BTreeMap<ResourceId, RemoteResource>>,
}

impl RemoteResources {
    pub fn new() -> Self {
        Self::default()
    }

    /// One resource of one member.
    pub fn get(&self, from: ClientId, id: &ResourceId) -> Option<&RemoteResource> {
        self.members.get(&from)?.get(id)
    }

    /// Every resource of every member.
    pub fn iter(&self) -> impl Iterator<Item = (ClientId, &RemoteResource)> {
        self.members
            .iter()
            .flat_map(|(peer, rs)| rs.values().map(move |r| (*peer, r)))
    }

    /// `from` announced `info` (again).
    pub fn provided(&mut self, from: ClientId, info: ProvideInfo) -> Result<Provided, ResourceError> {
        let resources = self.members.entry(from).or_default();
        if let Some(known) = resources.get_mut(&info.id) {
            known.info = info;
            return Ok(Provided::Updated);
        }
        if resources.len() >= MAX_RESOURCES_PER_MEMBER {
            return Err(ResourceError::TooMany(from));
        }
        resources.insert(
            info.id.clone(),
            RemoteResource {
                info,
                state: RemoteState::Available,
                waiting: 0,
                open: 0,
            },
        );
        Ok(Provided::New)
    }

    /// `from` withdrew resource `id`: it is forgotten, and what was requested, or a track or
    /// port connection flowing, must stop. A file whose channel already arrived is not torn
    /// down: it finishes or fails on its channel (`end`, or a close without it), because a
    /// provider withdraws a file as soon as it sent `end`, while the last bytes are still on
    /// the way. `None` when there is nothing to stop (or the id is unknown).
    pub fn provide_stopped(&mut self, from: ClientId, id: &ResourceId) -> Option<Teardown> {
        let r = self.members.get_mut(&from)?.remove(id)?;
        let stop = match (r.state, r.info.kind) {
            (RemoteState::Active, ResourceKind::File) => false,
            (state, _) => flowing(state),
        };
        stop.then(|| teardown(from, r))
    }

    /// `from` left: its resources are gone. Returns their ids.
    pub fn member_left(&mut self, from: ClientId) -> Vec<ResourceId> {
        self.members
            .remove(&from)
            .map(|rs| rs.into_keys().collect())
            .unwrap_or_default()
    }

    /// We ask `from` for `id` (send `request` after this succeeds). For a port this is one
    /// more connection, whatever its other connections do.
    pub fn request(&mut self, from: ClientId, id: &ResourceId) -> Result<(), ResourceError> {
        let r = self.find(from, id)?;
        match r.info.kind {
            ResourceKind::Unknown => return Err(ResourceError::UnknownKind(id.clone())),
            ResourceKind::Port if r.waiting >= MAX_WAITING_CHANNELS => {
                return Err(ResourceError::TooManyWaiting(id.clone()));
            }
            ResourceKind::Port => {
                r.waiting += 1;
                if r.state != RemoteState::Active {
                    r.state = RemoteState::Requested;
                }
                return Ok(());
            }
            ResourceKind::File | ResourceKind::Track => {}
        }
        match r.state {
            RemoteState::Available | RemoteState::Stopped => {
                r.state = RemoteState::Requested;
                Ok(())
            }
            RemoteState::Requested | RemoteState::Active => Err(ResourceError::AlreadyRequested(id.clone())),
        }
    }

    /// We no longer want `id` from `from` (send `request_stop` after this succeeds): what
    /// was requested or flowing (every connection of a port) must stop.
    pub fn request_stop(&mut self, from: ClientId, id: &ResourceId) -> Result<Teardown, ResourceError> {
        let r = self.find(from, id)?;
        if !flowing(r.state) {
            return Err(ResourceError::NotRequested(id.clone()));
        }
        r.state = RemoteState::Available;
        r.waiting = 0;
        r.open = 0;
        Ok(Teardown {
            peer: from,
            id: id.clone(),
            kind: r.info.kind,
        })
    }

    /// A track arrived from `from` with a MediaStream whose id is `stream_id`.
    pub fn incoming_track(&mut self, from: ClientId, stream_id: &str) -> Incoming {
        self.incoming(from, stream_id, true)
    }

    /// `from` opened a data channel labelled `label`: a file's, or one connection of a port.
    pub fn incoming_channel(&mut self, from: ClientId, label: &str) -> Incoming {
        self.incoming(from, label, false)
    }

    /// The flow of `id` from `from` ended (the file arrived or failed, the track ended, one
    /// connection of a port closed).
    pub fn ended(&mut self, from: ClientId, id: &ResourceId) -> Result<(), ResourceError> {
        let r = self.find(from, id)?;
        if r.state != RemoteState::Active {
            return Err(ResourceError::NotRequested(id.clone()));
        }
        if r.info.kind == ResourceKind::Port {
            r.open = r.open.saturating_sub(1);
            if r.open > 0 {
                return Ok(());
            }
            if r.waiting > 0 {
                r.state = RemoteState::Requested;
                return Ok(());
            }
        }
        r.state = RemoteState::Stopped;
        Ok(())
    }

    fn incoming(&mut self, from: ClientId, id: &str, track: bool) -> Incoming {
        let id = ResourceId(id.to_owned());
        let Some(r) = self.members.get_mut(&from).and_then(|rs| rs.get_mut(&id)) else {
            return Incoming::Refuse(Refusal::Unknown(id));
        };
        let kind = r.info.kind;
        let by_channel = matches!(kind, ResourceKind::File | ResourceKind::Port);
        let fits = if track { kind == ResourceKind::Track } else { by_channel };
        if !fits {
            return Incoming::Refuse(Refusal::WrongKind { id, kind });
        }
        match (r.state, kind) {
            // Each connection of a port takes one waiting request.
            (RemoteState::Requested | RemoteState::Active, ResourceKind::Port) if r.waiting > 0 => {
                r.waiting -= 1;
                r.open += 1;
                r.state = RemoteState::Active;
                Incoming::Accept(id)
            }
            (RemoteState::Requested, ResourceKind::File | ResourceKind::Track) => {
                r.state = RemoteState::Active;
                Incoming::Accept(id)
            }
            // A stream may carry its track again after a renegotiation; a file gets one channel
            // per request.
            (RemoteState::Active, ResourceKind::Track) => Incoming::Accept(id),
            (state, _) => Incoming::Refuse(Refusal::NotRequested { id, state }),
        }
    }

    fn find(&mut self, from: ClientId, id: &ResourceId) -> Result<&mut RemoteResource, ResourceError> {
        self.members
            .get_mut(&from)
            .and_then(|rs| rs.get_mut(id))
            .ok_or_else(|| ResourceError::Unknown(id.clone()))
    }
}

/// Our own resources and who receives each.
#[derive(Debug, Default)]
pub struct LocalResources {
    resources: BTreeMap<ResourceId, LocalResource>,
    /// Every id ever added, so none is reused for a new resource.
    used: BTreeSet<ResourceId>,
}

#[derive(Debug)]
struct LocalResource {
    info: ProvideInfo,
    /// Who receives it, and how many flows each has (always 1 except for a port's
    /// connections).
    receivers: BTreeMap<ClientId, usize>,
}

impl LocalResources {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts offering a resource (send `provide` after this succeeds).
    pub fn add(&mut self, info: ProvideInfo) -> Result<(), ResourceError> {
        if info.kind == ResourceKind::Unknown {
            return Err(ResourceError::UnknownKind(info.id));
        }
        if !self.used.insert(info.id.clone()) {
            return Err(ResourceError::ReusedId(info.id));
        }
        self.resources.insert(
            info.id.clone(),
            LocalResource {
                info,
                receivers: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// The description of one of our resources.
    pub fn get(&self, id: &ResourceId) -> Option<&ProvideInfo> {
        self.resources.get(id).map(|r| &r.info)
    }

    /// Our resources, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &ProvideInfo> {
        self.resources.values().map(|r| &r.info)
    }

    /// Who receives `id` now.
    pub fn receivers(&self, id: &ResourceId) -> impl Iterator<Item = ClientId> + '_ {
        self.resources
            .get(id)
            .into_iter()
            .flat_map(|r| r.receivers.keys().copied())
    }

    /// `from` requested `id`: the kind tells the client what to start (add the track with a
    /// stream whose id is `id`, or open a data channel labelled `id`). A file or track is
    /// sent once at a time per member; each request of a port is one more connection.
    pub fn requested(&mut self, from: ClientId, id: &ResourceId) -> Result<ResourceKind, ResourceError> {
        let r = self
            .resources
            .get_mut(id)
            .ok_or_else(|| ResourceError::Unknown(id.clone()))?;
        let kind = r.info.kind;
        let flows = r.receivers.entry(from).or_insert(0);
        if *flows > 0 && kind != ResourceKind::Port {
            return Err(ResourceError::AlreadySending {
                peer: from,
                id: id.clone(),
            });
        }
        *flows += 1;
        Ok(kind)
    }

    /// One flow of `id` to `from` ended (the upload finished or failed, one connection of a
    /// port closed, or the client could not start it). Whether `from` was receiving it.
    pub fn ended(&mut self, from: ClientId, id: &ResourceId) -> bool {
        let Some(r) = self.resources.get_mut(id) else {
            return false;
        };
        let Some(flows) = r.receivers.get_mut(&from) else {
            return false;
        };
        *flows = flows.saturating_sub(1);
        if *flows == 0 {
            r.receivers.remove(&from);
        }
        true
    }

    /// `from` sent `request_stop` for `id`: it no longer receives it (no connection of a port
    /// either). Returns what to tear down, if it was receiving.
    pub fn request_stopped(&mut self, from: ClientId, id: &ResourceId) -> Option<Teardown> {
        let r = self.resources.get_mut(id)?;
        r.receivers.remove(&from).map(|_| Teardown {
            peer: from,
            id: id.clone(),
            kind: r.info.kind,
        })
    }

    /// We withdraw `id` (send `provide_stop` after this succeeds): the teardown for each
    /// member that receives it.
    pub fn remove(&mut self, id: &ResourceId) -> Result<Vec<Teardown>, ResourceError> {
        let r = self
            .resources
            .remove(id)
            .ok_or_else(|| ResourceError::Unknown(id.clone()))?;
        let kind = r.info.kind;
        Ok(r.receivers
            .into_keys()
            .map(|peer| Teardown {
                peer,
                id: id.clone(),
                kind,
            })
            .collect())
    }

    /// `peer` left: it receives nothing any more. Returns the ids it was receiving (the client
    /// closes the whole peer connection anyway).
    pub fn member_left(&mut self, peer: ClientId) -> Vec<ResourceId> {
        self.resources
            .iter_mut()
            .filter_map(|(id, r)| r.receivers.remove(&peer).map(|_| id.clone()))
            .collect()
    }
}

fn flowing(state: RemoteState) -> bool {
    matches!(state, RemoteState::Requested | RemoteState::Active)
}

fn teardown(peer: ClientId, r: RemoteResource) -> Teardown {
    Teardown {
        peer,
        id: r.info.id,
        kind: r.info.kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::TrackKind;

    const ALICE: ClientId = ClientId(3);
    const BOB: ClientId = ClientId(4);

    fn rid(s: &str) -> ResourceId {
        ResourceId(s.into())
    }

    fn file(id: &str) -> ProvideInfo {
        ProvideInfo {
            id: rid(id),
            kind: ResourceKind::File,
            track_kind: None,
            label: Some(format!("{id}.txt")),
            size: Some(3),
        }
    }

    fn track(id: &str) -> ProvideInfo {
        ProvideInfo {
            id: rid(id),
            kind: ResourceKind::Track,
            track_kind: Some(TrackKind::Video),
            label: Some("Camera".into()),
            size: None,
        }
    }

    fn port(id: &str) -> ProvideInfo {
        ProvideInfo {
            id: rid(id),
            kind: ResourceKind::Port,
            track_kind: None,
            label: Some("tcp 8080".into()),
            size: None,
        }
    }

    fn hologram(id: &str) -> ProvideInfo {
        ProvideInfo {
            kind: ResourceKind::Unknown,
            ..file(id)
        }
    }

    #[test]
    fn a_remote_file_goes_through_its_states() {
        let mut r = RemoteResources::new();
        assert_eq!(r.provided(ALICE, file("f")), Ok(Provided::New));
        let state = |r: &RemoteResources| r.get(ALICE, &rid("f")).map(|x| x.state);
        assert_eq!(state(&r), Some(RemoteState::Available));
        // Nobody asked: a channel is refused and changes nothing.
        assert_eq!(
            r.incoming_channel(ALICE, "f"),
            Incoming::Refuse(Refusal::NotRequested {
                id: rid("f"),
                state: RemoteState::Available
            })
        );
        r.request(ALICE, &rid("f")).expect("available");
        assert_eq!(
            r.request(ALICE, &rid("f")),
            Err(ResourceError::AlreadyRequested(rid("f")))
        );
        assert_eq!(state(&r), Some(RemoteState::Requested));
        assert_eq!(r.incoming_channel(ALICE, "f"), Incoming::Accept(rid("f")));
        assert_eq!(state(&r), Some(RemoteState::Active));
        // One channel per request.
        assert!(matches!(r.incoming_channel(ALICE, "f"), Incoming::Refuse(_)));
        r.ended(ALICE, &rid("f")).expect("active");
        assert_eq!(state(&r), Some(RemoteState::Stopped));
        // Downloaded again.
        r.request(ALICE, &rid("f"))
            .expect("stopped files can be requested again");
        assert_eq!(r.incoming_channel(ALICE, "f"), Incoming::Accept(rid("f")));
    }

    #[test]
    fn tracks_match_by_stream_id_and_only_when_requested() {
        let mut r = RemoteResources::new();
        r.provided(ALICE, track("cam")).expect("room");
        r.provided(BOB, track("cam")).expect("room");
        assert!(matches!(r.incoming_track(ALICE, "cam"), Incoming::Refuse(_)));
        r.request(ALICE, &rid("cam")).expect("available");
        // Bob's resource of the same id was not requested.
        assert!(matches!(r.incoming_track(BOB, "cam"), Incoming::Refuse(_)));
        assert_eq!(r.incoming_track(ALICE, "cam"), Incoming::Accept(rid("cam")));
        // The same stream again after a renegotiation.
        assert_eq!(r.incoming_track(ALICE, "cam"), Incoming::Accept(rid("cam")));
        assert_eq!(
            r.incoming_track(ALICE, "other"),
            Incoming::Refuse(Refusal::Unknown(rid("other")))
        );
        assert_eq!(
            r.incoming_channel(ALICE, "cam"),
            Incoming::Refuse(Refusal::WrongKind {
                id: rid("cam"),
                kind: ResourceKind::Track
            })
        );
        assert_eq!(
            r.request_stop(ALICE, &rid("cam")),
            Ok(Teardown {
                peer: ALICE,
                id: rid("cam"),
                kind: ResourceKind::Track
            })
        );
        assert_eq!(r.get(ALICE, &rid("cam")).map(|x| x.state), Some(RemoteState::Available));
        assert_eq!(
            r.request_stop(ALICE, &rid("cam")),
            Err(ResourceError::NotRequested(rid("cam")))
        );
    }

    #[test]
    fn re_provide_updates_and_provide_stop_tears_down() {
        let mut r = RemoteResources::new();
        r.provided(ALICE, file("f")).expect("room");
        r.request(ALICE, &rid("f")).expect("available");
        let renamed = ProvideInfo {
            label: Some("renamed".into()),
            ..file("f")
        };
        assert_eq!(r.provided(ALICE, renamed.clone()), Ok(Provided::Updated));
        let got = r.get(ALICE, &rid("f")).expect("kept");
        assert_eq!((got.info.clone(), got.state), (renamed, RemoteState::Requested));
        assert_eq!(
            r.provide_stopped(ALICE, &rid("f")),
            Some(Teardown {
                peer: ALICE,
                id: rid("f"),
                kind: ResourceKind::File
            })
        );
        assert_eq!(r.get(ALICE, &rid("f")), None);
        // A late channel for the withdrawn resource is refused.
        assert_eq!(
            r.incoming_channel(ALICE, "f"),
            Incoming::Refuse(Refusal::Unknown(rid("f")))
        );
        r.provided(ALICE, file("g")).expect("room");
        assert_eq!(r.provide_stopped(ALICE, &rid("g")), None, "nothing flowed");
        assert_eq!(r.provide_stopped(ALICE, &rid("nope")), None);
    }

    #[test]
    fn a_withdrawn_file_whose_channel_arrived_finishes_on_its_channel() {
        let mut r = RemoteResources::new();
        r.provided(ALICE, file("f")).expect("room");
        r.request(ALICE, &rid("f")).expect("available");
        assert_eq!(r.incoming_channel(ALICE, "f"), Incoming::Accept(rid("f")));
        // The provider withdraws it right after `end`: nothing to tear down, the channel decides.
        assert_eq!(r.provide_stopped(ALICE, &rid("f")), None);
        assert_eq!(r.get(ALICE, &rid("f")), None);
        assert_eq!(r.ended(ALICE, &rid("f")), Err(ResourceError::Unknown(rid("f"))));
        // A cancelled download that had not started is torn down (its sink is dropped).
        r.provided(ALICE, file("g")).expect("room");
        r.request(ALICE, &rid("g")).expect("available");
        assert_eq!(
            r.request_stop(ALICE, &rid("g")),
            Ok(Teardown {
                peer: ALICE,
                id: rid("g"),
                kind: ResourceKind::File
            })
        );
        assert_eq!(r.get(ALICE, &rid("g")).map(|x| x.state), Some(RemoteState::Available));
    }

    #[test]
    fn each_port_request_takes_one_channel() {
        let mut r = RemoteResources::new();
        r.provided(ALICE, port("web")).expect("room");
        let at = |r: &RemoteResources| {
            let x = r.get(ALICE, &rid("web")).expect("known");
            (x.state, x.waiting, x.open)
        };
        // Nobody asked: refused.
        assert!(matches!(r.incoming_channel(ALICE, "web"), Incoming::Refuse(_)));
        r.request(ALICE, &rid("web")).expect("one connection");
        r.request(ALICE, &rid("web")).expect("another connection");
        assert_eq!(at(&r), (RemoteState::Requested, 2, 0));
        assert_eq!(r.incoming_channel(ALICE, "web"), Incoming::Accept(rid("web")));
        assert_eq!(at(&r), (RemoteState::Active, 1, 1));
        // A third connection while one is open.
        r.request(ALICE, &rid("web")).expect("a third");
        assert_eq!(r.incoming_channel(ALICE, "web"), Incoming::Accept(rid("web")));
        assert_eq!(r.incoming_channel(ALICE, "web"), Incoming::Accept(rid("web")));
        assert_eq!(at(&r), (RemoteState::Active, 0, 3));
        // More channels than requests: refused.
        assert_eq!(
            r.incoming_channel(ALICE, "web"),
            Incoming::Refuse(Refusal::NotRequested {
                id: rid("web"),
                state: RemoteState::Active
            })
        );
        assert_eq!(
            r.incoming_track(ALICE, "web"),
            Incoming::Refuse(Refusal::WrongKind {
                id: rid("web"),
                kind: ResourceKind::Port
            })
        );
        r.ended(ALICE, &rid("web")).expect("open");
        r.ended(ALICE, &rid("web")).expect("open");
        assert_eq!(at(&r), (RemoteState::Active, 0, 1));
        r.request(ALICE, &rid("web")).expect("a fourth");
        r.ended(ALICE, &rid("web")).expect("open");
        assert_eq!(at(&r), (RemoteState::Requested, 1, 0), "the fourth still waits");
        assert_eq!(r.incoming_channel(ALICE, "web"), Incoming::Accept(rid("web")));
        r.ended(ALICE, &rid("web")).expect("open");
        assert_eq!(at(&r), (RemoteState::Stopped, 0, 0));
        assert_eq!(
            r.ended(ALICE, &rid("web")),
            Err(ResourceError::NotRequested(rid("web")))
        );

        // The waiting connections are bounded.
        for _ in 0..MAX_WAITING_CHANNELS {
            r.request(ALICE, &rid("web")).expect("below the bound");
        }
        assert_eq!(
            r.request(ALICE, &rid("web")),
            Err(ResourceError::TooManyWaiting(rid("web")))
        );
        // provide_stop ends every connection, waiting or open.
        assert_eq!(r.incoming_channel(ALICE, "web"), Incoming::Accept(rid("web")));
        assert_eq!(
            r.provide_stopped(ALICE, &rid("web")),
            Some(Teardown {
                peer: ALICE,
                id: rid("web"),
                kind: ResourceKind::Port
            })
        );
        assert!(matches!(r.incoming_channel(ALICE, "web"), Incoming::Refuse(_)));
    }

    #[test]
    fn a_port_carries_several_connections_to_one_receiver() {
        let mut l = LocalResources::new();
        l.add(port("web")).expect("new");
        for _ in 0..3 {
            assert_eq!(l.requested(ALICE, &rid("web")), Ok(ResourceKind::Port));
        }
        assert_eq!(l.requested(BOB, &rid("web")), Ok(ResourceKind::Port));
        assert!(l.ended(ALICE, &rid("web")));
        assert!(l.ended(ALICE, &rid("web")));
        assert_eq!(l.receivers(&rid("web")).collect::<Vec<_>>(), vec![ALICE, BOB]);
        assert!(l.ended(ALICE, &rid("web")));
        assert_eq!(l.receivers(&rid("web")).collect::<Vec<_>>(), vec![BOB]);
        assert!(!l.ended(ALICE, &rid("web")), "nothing left to end");
        l.requested(BOB, &rid("web")).expect("known");
        // request_stop ends every connection of that member at once.
        assert!(l.request_stopped(BOB, &rid("web")).is_some());
        assert_eq!(l.receivers(&rid("web")).count(), 0);
        assert!(!l.ended(BOB, &rid("web")));
        assert!(!l.ended(BOB, &rid("nope")));
    }

    #[test]
    fn unknown_kinds_are_listed_but_not_requested() {
        let mut r = RemoteResources::new();
        r.provided(ALICE, hologram("h")).expect("room");
        assert_eq!(r.iter().count(), 1);
        assert_eq!(r.request(ALICE, &rid("h")), Err(ResourceError::UnknownKind(rid("h"))));
        assert!(matches!(r.incoming_channel(ALICE, "h"), Incoming::Refuse(_)));
        assert_eq!(r.request(BOB, &rid("h")), Err(ResourceError::Unknown(rid("h"))));
        let mut l = LocalResources::new();
        assert_eq!(l.add(hologram("h")), Err(ResourceError::UnknownKind(rid("h"))));
    }

    #[test]
    fn a_member_leaving_takes_its_resources_and_the_count_is_bounded() {
        let mut r = RemoteResources::new();
        for i in 0..MAX_RESOURCES_PER_MEMBER {
            assert_eq!(r.provided(ALICE, file(&i.to_string())), Ok(Provided::New));
        }
        assert_eq!(r.provided(ALICE, file("one more")), Err(ResourceError::TooMany(ALICE)));
        // Updating a known one is still fine at the limit.
        assert_eq!(r.provided(ALICE, file("7")), Ok(Provided::Updated));
        r.provided(BOB, file("b")).expect("room");
        assert_eq!(r.member_left(ALICE).len(), MAX_RESOURCES_PER_MEMBER);
        assert_eq!(r.iter().map(|(p, _)| p).collect::<Vec<_>>(), vec![BOB]);
        assert!(r.member_left(ALICE).is_empty());
    }

    #[test]
    fn local_resources_track_their_receivers() {
        let mut l = LocalResources::new();
        l.add(file("f")).expect("new");
        l.add(track("cam")).expect("new");
        assert_eq!(l.add(file("f")), Err(ResourceError::ReusedId(rid("f"))));
        assert_eq!(l.requested(ALICE, &rid("f")), Ok(ResourceKind::File));
        assert_eq!(l.requested(BOB, &rid("f")), Ok(ResourceKind::File));
        assert_eq!(
            l.requested(BOB, &rid("f")),
            Err(ResourceError::AlreadySending {
                peer: BOB,
                id: rid("f")
            })
        );
        assert_eq!(l.requested(BOB, &rid("cam")), Ok(ResourceKind::Track));
        assert_eq!(l.requested(BOB, &rid("nope")), Err(ResourceError::Unknown(rid("nope"))));
        assert_eq!(l.receivers(&rid("f")).collect::<Vec<_>>(), vec![ALICE, BOB]);

        // Alice sent request_stop.
        assert_eq!(
            l.request_stopped(ALICE, &rid("f")),
            Some(Teardown {
                peer: ALICE,
                id: rid("f"),
                kind: ResourceKind::File
            })
        );
        assert_eq!(l.request_stopped(ALICE, &rid("f")), None);
        // She may download it again; this time it finishes.
        assert_eq!(l.requested(ALICE, &rid("f")), Ok(ResourceKind::File));
        assert!(l.ended(ALICE, &rid("f")));
        assert!(!l.ended(ALICE, &rid("f")));
        assert_eq!(l.requested(ALICE, &rid("f")), Ok(ResourceKind::File));

        // Bob leaves: he receives nothing any more.
        assert_eq!(l.member_left(BOB), vec![rid("cam"), rid("f")]);
        assert_eq!(l.receivers(&rid("cam")).count(), 0);

        // provide_stop: one teardown per receiver; the id stays used.
        l.requested(BOB, &rid("f")).expect("known");
        assert_eq!(
            l.remove(&rid("f")),
            Ok(vec![
                Teardown {
                    peer: ALICE,
                    id: rid("f"),
                    kind: ResourceKind::File
                },
                Teardown {
                    peer: BOB,
                    id: rid("f"),
                    kind: ResourceKind::File
                },
            ])
        );
        assert_eq!(l.remove(&rid("f")), Err(ResourceError::Unknown(rid("f"))));
        assert_eq!(l.add(file("f")), Err(ResourceError::ReusedId(rid("f"))));
        assert_eq!(l.requested(ALICE, &rid("f")), Err(ResourceError::Unknown(rid("f"))));
        assert_eq!(l.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), vec![rid("cam")]);
    }
}
