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
//! Neither half sends anything: the client relays `request` / `request_stop` / `provide_stop`
//! through [`crate::session::Session`] and performs the [`Teardown`]s on its peer connections.
//! Resource kinds this implementation does not know are kept (so a newer peer's resources can
//! be listed) but cannot be requested.

use std::collections::{BTreeMap, BTreeSet};

use crate::packets::{ClientId, ProvideInfo, ResourceId, ResourceKind};

/// How many resources one member may have announced at a time. keks-meet users offer a camera,
/// a microphone, a screen and some files; this bounds a member who announces without end.
pub const MAX_RESOURCES_PER_MEMBER: usize = 1024;

/// Where a resource another member provides stands, seen from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteState {
    /// Announced; nothing flows.
    Available,
    /// We asked for it; the track or channel has not arrived yet.
    Requested,
    /// The track or the file's data channel arrived and is flowing.
    Active,
    /// It flowed and ended (a file arrived or failed, a track ended); it may be requested again.
    Stopped,
}

/// A resource another member provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteResource {
    pub info: ProvideInfo,
    pub state: RemoteState,
}

/// Something flowing that the client must stop: remove the track sent to (or ignore the track
/// received from) `peer`, or close the data channel, for resource `id`.
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
            },
        );
        Ok(Provided::New)
    }

    /// `from` withdrew resource `id`: it is forgotten, and what was requested or flowing must
    /// stop. `None` when nothing flowed (or the id is unknown).
    pub fn provide_stopped(&mut self, from: ClientId, id: &ResourceId) -> Option<Teardown> {
        let r = self.members.get_mut(&from)?.remove(id)?;
        flowing(r.state).then(|| teardown(from, r))
    }

    /// `from` left: its resources are gone. Returns their ids.
    pub fn member_left(&mut self, from: ClientId) -> Vec<ResourceId> {
        self.members
            .remove(&from)
            .map(|rs| rs.into_keys().collect())
            .unwrap_or_default()
    }

    /// We ask `from` for `id` (send `request` after this succeeds).
    pub fn request(&mut self, from: ClientId, id: &ResourceId) -> Result<(), ResourceError> {
        let r = self.find(from, id)?;
        if r.info.kind == ResourceKind::Unknown {
            return Err(ResourceError::UnknownKind(id.clone()));
        }
        match r.state {
            RemoteState::Available | RemoteState::Stopped => {
                r.state = RemoteState::Requested;
                Ok(())
            }
            RemoteState::Requested | RemoteState::Active => Err(ResourceError::AlreadyRequested(id.clone())),
        }
    }

    /// We no longer want `id` from `from` (send `request_stop` after this succeeds). Returns
    /// the teardown when it was already flowing.
    pub fn request_stop(&mut self, from: ClientId, id: &ResourceId) -> Result<Option<Teardown>, ResourceError> {
        let r = self.find(from, id)?;
        let was = r.state;
        if !flowing(was) {
            return Err(ResourceError::NotRequested(id.clone()));
        }
        r.state = RemoteState::Available;
        Ok((was == RemoteState::Active).then(|| Teardown {
            peer: from,
            id: id.clone(),
            kind: r.info.kind,
        }))
    }

    /// A track arrived from `from` with a MediaStream whose id is `stream_id`.
    pub fn incoming_track(&mut self, from: ClientId, stream_id: &str) -> Incoming {
        self.incoming(from, stream_id, ResourceKind::Track)
    }

    /// `from` opened a data channel labelled `label`.
    pub fn incoming_channel(&mut self, from: ClientId, label: &str) -> Incoming {
        self.incoming(from, label, ResourceKind::File)
    }

    /// The flow of `id` from `from` ended (the file arrived or failed, the track ended).
    pub fn ended(&mut self, from: ClientId, id: &ResourceId) -> Result<(), ResourceError> {
        let r = self.find(from, id)?;
        if r.state != RemoteState::Active {
            return Err(ResourceError::NotRequested(id.clone()));
        }
        r.state = RemoteState::Stopped;
        Ok(())
    }

    fn incoming(&mut self, from: ClientId, id: &str, kind: ResourceKind) -> Incoming {
        let id = ResourceId(id.to_owned());
        let Some(r) = self.members.get_mut(&from).and_then(|rs| rs.get_mut(&id)) else {
            return Incoming::Refuse(Refusal::Unknown(id));
        };
        if r.info.kind != kind {
            return Incoming::Refuse(Refusal::WrongKind { id, kind: r.info.kind });
        }
        match (r.state, kind) {
            (RemoteState::Requested, _) => {
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
    receivers: BTreeSet<ClientId>,
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
                receivers: BTreeSet::new(),
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
            .flat_map(|r| r.receivers.iter().copied())
    }

    /// `from` requested `id`: the kind tells the client what to start (add the track with a
    /// stream whose id is `id`, or open a data channel labelled `id`).
    pub fn requested(&mut self, from: ClientId, id: &ResourceId) -> Result<ResourceKind, ResourceError> {
        let r = self
            .resources
            .get_mut(id)
            .ok_or_else(|| ResourceError::Unknown(id.clone()))?;
        if !r.receivers.insert(from) {
            return Err(ResourceError::AlreadySending {
                peer: from,
                id: id.clone(),
            });
        }
        Ok(r.info.kind)
    }

    /// `from` sent `request_stop` for `id`, or its transfer ended: it no longer receives it.
    /// Returns what to tear down, if it was receiving.
    pub fn request_stopped(&mut self, from: ClientId, id: &ResourceId) -> Option<Teardown> {
        let r = self.resources.get_mut(id)?;
        r.receivers.remove(&from).then(|| Teardown {
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
            .into_iter()
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
            .filter_map(|(id, r)| r.receivers.remove(&peer).then(|| id.clone()))
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
            Ok(Some(Teardown {
                peer: ALICE,
                id: rid("cam"),
                kind: ResourceKind::Track
            }))
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

        // Alice's download finished (or she sent request_stop).
        assert_eq!(
            l.request_stopped(ALICE, &rid("f")),
            Some(Teardown {
                peer: ALICE,
                id: rid("f"),
                kind: ResourceKind::File
            })
        );
        assert_eq!(l.request_stopped(ALICE, &rid("f")), None);
        // She may download it again.
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
