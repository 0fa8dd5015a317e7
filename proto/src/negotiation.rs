//! Perfect negotiation with one peer, as a state machine for a WebRTC stack without implicit
//! rollback (the `webrtc` crate).
//!
//! Either side may start an offer/answer exchange whenever it adds a track or a data channel.
//! When both offer at once ("glare"), the *polite* side (the lower client id, see
//! [`crate::session::Session::is_polite_towards`]) gives its offer up and answers, and the
//! *impolite* side ignores the colliding offer and waits for its answer. Browsers roll a local
//! offer back implicitly when a remote offer is set; the `webrtc` crate does not, so the
//! rollback is an explicit [`Action::Rollback`] here. On the wire this stays plain keks-meet:
//! `offer`, `answer`, `ice_candidate`.
//!
//! # Contract with the client
//! [`Negotiator::handle`] takes an [`Input`] and returns the [`Action`]s to perform, in order.
//! The client performs the actions of one batch one after another (awaiting each), and reports
//! what the asynchronous ones did with a later input:
//!
//! | action | client does | then feeds |
//! |---|---|---|
//! | [`Action::CreateOffer`] | `create_offer`, `set_local_description(offer)` | [`Input::LocalOfferReady`] |
//! | [`Action::Rollback`] | `set_local_description(rollback)` (always followed by `SetRemoteOffer`) | nothing |
//! | [`Action::SetRemoteOffer`] | `set_remote_description(offer)` | [`Input::RemoteDescriptionSet`] |
//! | [`Action::CreateAnswer`] | `create_answer`, `set_local_description(answer)` | [`Input::LocalAnswerReady`] |
//! | [`Action::SetRemoteAnswer`] | `set_remote_description(answer)` | [`Input::RemoteDescriptionSet`] |
//! | [`Action::AddCandidate`] | `add_ice_candidate` (a failure is only logged) | nothing |
//! | [`Action::SendOffer`] / [`Action::SendAnswer`] | relay an `offer` / `answer` to the peer | nothing |
//! | [`Action::Ignore`] | log the reason (debug or warn) | nothing |
//!
//! When an operation fails, the client drops the rest of that batch and feeds
//! [`Input::OperationFailed`] with the connection's signaling state read right then. Inputs
//! that arrive while an operation is in flight (a remote offer, a candidate, negotiation
//! needed) may be fed at any time: the machine remembers them and acts once the operation
//! has been reported.
//!
//! # Rules
//! - Negotiation-needed while an exchange is in flight is remembered and re-run once stable
//!   (also after the polite side rolled its offer back: its changes still need an offer).
//! - A remote offer that collides with our own offer (made or being made): the impolite side
//!   ignores it ([`IgnoreReason::CollidingOffer`]); the polite side rolls back and answers. A
//!   remote offer that arrives while we apply a description waits until that is done.
//! - A remote answer is applied only in `have-local-offer`; anywhere else it is ignored
//!   ([`IgnoreReason::AnswerInWrongState`]), never fatal.
//! - Remote candidates wait in a buffer (at most [`MAX_BUFFERED_CANDIDATES`]; more are
//!   dropped) while no remote description is set, while one is being applied, and while a
//!   colliding offer is ignored; they are released with the next
//!   [`Input::RemoteDescriptionSet`]. The impolite side does not add the polite side's
//!   candidates while ignoring its offer, but keeps them: the polite side's ICE agent does not
//!   trickle them again after its rollback, and they usually match its answer.
//! - After [`SignalingState::Closed`] every input is ignored.
//!
//! The machine tracks the signaling state from the operations it asks for.
//! [`Input::SignalingState`] is needed only for `Closed`; other states are adopted when no
//! operation is in flight (feed `pc.signaling_state()` as read then, not a queued callback's
//! argument, which may be stale).

use std::collections::VecDeque;
use std::fmt;

use crate::packets::IceCandidate;

/// How many remote candidates wait for a remote description at most. A browser gathers a
/// handful per network interface; 256 covers any sane peer and bounds a hostile one.
pub const MAX_BUFFERED_CANDIDATES: usize = 256;

/// The signaling state of a peer connection (`RTCSignalingState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalingState {
    Stable,
    HaveLocalOffer,
    HaveRemoteOffer,
    HaveLocalPranswer,
    HaveRemotePranswer,
    Closed,
}

impl fmt::Display for SignalingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignalingState::Stable => "stable",
            SignalingState::HaveLocalOffer => "have-local-offer",
            SignalingState::HaveRemoteOffer => "have-remote-offer",
            SignalingState::HaveLocalPranswer => "have-local-pranswer",
            SignalingState::HaveRemotePranswer => "have-remote-pranswer",
            SignalingState::Closed => "closed",
        })
    }
}

/// What happened: a peer connection event, a signaling message from the peer, or the
/// completion of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The peer connection fired negotiation-needed (a track or data channel was added or
    /// removed).
    NegotiationNeeded,
    /// The offer asked for with [`Action::CreateOffer`] was created and set as local
    /// description.
    LocalOfferReady(String),
    /// The peer sent an `offer`.
    RemoteOffer(String),
    /// The peer sent an `answer`.
    RemoteAnswer(String),
    /// The remote description asked for ([`Action::SetRemoteOffer`],
    /// [`Action::SetRemoteAnswer`]) was set.
    RemoteDescriptionSet,
    /// The answer asked for with [`Action::CreateAnswer`] was created and set as local
    /// description.
    LocalAnswerReady(String),
    /// The peer sent an `ice_candidate`.
    RemoteCandidate(IceCandidate),
    /// The peer connection's signaling state, read now.
    SignalingState(SignalingState),
    /// An action of the last batch failed; `state` is the signaling state read after the
    /// failure.
    OperationFailed { state: SignalingState, reason: String },
}

/// What the client should do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create an offer and set it as local description; then feed [`Input::LocalOfferReady`].
    CreateOffer,
    /// Roll the local offer back (`set_local_description` of type rollback). The polite side's
    /// answer to glare; a [`Action::SetRemoteOffer`] follows in the same batch.
    Rollback,
    /// Set this offer as remote description; then feed [`Input::RemoteDescriptionSet`].
    SetRemoteOffer(String),
    /// Create an answer and set it as local description; then feed [`Input::LocalAnswerReady`].
    CreateAnswer,
    /// Set this answer as remote description; then feed [`Input::RemoteDescriptionSet`].
    SetRemoteAnswer(String),
    /// Add a remote ICE candidate.
    AddCandidate(IceCandidate),
    /// Relay this offer to the peer.
    SendOffer(String),
    /// Relay this answer to the peer.
    SendAnswer(String),
    /// Nothing to do; the reason is for the log.
    Ignore { reason: IgnoreReason },
}

/// Why an input led to nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// An offer that collided with ours, on the impolite side.
    CollidingOffer,
    /// An answer while we were not waiting for one.
    AnswerInWrongState(SignalingState),
    /// A remote offer in a state that cannot take one (a provisional answer is pending).
    OfferInWrongState(SignalingState),
    /// The candidate buffer is full ([`MAX_BUFFERED_CANDIDATES`]); the candidate is dropped.
    CandidateBufferFull,
    /// A completion report for an operation that was not asked for (a client bug).
    Unexpected(&'static str),
    /// An operation failed (the client's error message).
    OperationFailed(String),
    /// The peer connection is closed.
    Closed,
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IgnoreReason::CollidingOffer => f.write_str("ignoring an offer that collides with ours (impolite side)"),
            IgnoreReason::AnswerInWrongState(s) => write!(f, "ignoring an answer in state {s}"),
            IgnoreReason::OfferInWrongState(s) => write!(f, "ignoring an offer in state {s}"),
            IgnoreReason::CandidateBufferFull => write!(
                f,
                "dropping an ICE candidate: {MAX_BUFFERED_CANDIDATES} already wait for a remote description"
            ),
            IgnoreReason::Unexpected(what) => write!(f, "unexpected {what}"),
            IgnoreReason::OperationFailed(e) => write!(f, "negotiation step failed: {e}"),
            IgnoreReason::Closed => f.write_str("peer connection closed"),
        }
    }
}

/// The operation the machine waits for the client to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    MakingOffer,
    SettingRemoteOffer,
    Answering,
    SettingRemoteAnswer,
}

/// Perfect negotiation with one peer.
#[derive(Debug)]
pub struct Negotiator {
    polite: bool,
    /// The signaling state as of the last completed operation.
    state: SignalingState,
    op: Option<Op>,
    /// Negotiation-needed arrived while busy: offer once stable.
    pending: bool,
    /// A remote offer that arrived during an operation, handled when it completes.
    deferred_offer: Option<String>,
    /// The impolite side is ignoring a colliding offer (and holds back its candidates).
    ignoring_offer: bool,
    /// A remote description has been set at least once, so candidates can be added.
    has_remote: bool,
    /// Candidates waiting for a remote description; bounded by [`MAX_BUFFERED_CANDIDATES`].
    candidates: VecDeque<IceCandidate>,
    collisions: u32,
}

impl Negotiator {
    /// A negotiator for a fresh peer connection (`stable`, no descriptions).
    pub fn new(polite: bool) -> Self {
        Negotiator {
            polite,
            state: SignalingState::Stable,
            op: None,
            pending: false,
            deferred_offer: None,
            ignoring_offer: false,
            has_remote: false,
            candidates: VecDeque::new(),
            collisions: 0,
        }
    }

    /// Whether this side gives its offer up on glare.
    pub fn polite(&self) -> bool {
        self.polite
    }

    /// The signaling state the machine believes the connection is in.
    pub fn signaling_state(&self) -> SignalingState {
        self.state
    }

    /// Stable with nothing in flight and nothing pending: negotiation has settled.
    pub fn is_settled(&self) -> bool {
        self.state == SignalingState::Stable && self.op.is_none() && !self.pending && self.deferred_offer.is_none()
    }

    /// How many remote candidates wait for a remote description.
    pub fn buffered_candidates(&self) -> usize {
        self.candidates.len()
    }

    /// How many offer collisions this side has seen (for diagnostics and tests).
    pub fn collisions(&self) -> u32 {
        self.collisions
    }

    /// Feeds one input and returns what to do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        if self.state == SignalingState::Closed {
            return vec![ignore(IgnoreReason::Closed)];
        }
        let mut out = Vec::new();
        match input {
            Input::NegotiationNeeded => {
                if self.op.is_none() && self.state == SignalingState::Stable && self.deferred_offer.is_none() {
                    self.op = Some(Op::MakingOffer);
                    out.push(Action::CreateOffer);
                } else {
                    self.pending = true;
                }
            }
            Input::LocalOfferReady(sdp) => {
                if self.op != Some(Op::MakingOffer) {
                    out.push(ignore(IgnoreReason::Unexpected("local offer")));
                    return out;
                }
                self.op = None;
                self.state = SignalingState::HaveLocalOffer;
                match self.deferred_offer.take() {
                    // Polite, and the peer's offer came while ours was being made: give ours up
                    // before anyone saw it.
                    Some(remote) => self.accept_offer(remote, &mut out),
                    None => out.push(Action::SendOffer(sdp)),
                }
            }
            Input::RemoteOffer(sdp) => self.remote_offer(sdp, &mut out),
            Input::RemoteAnswer(sdp) => {
                if self.op.is_none() && self.state == SignalingState::HaveLocalOffer {
                    self.op = Some(Op::SettingRemoteAnswer);
                    out.push(Action::SetRemoteAnswer(sdp));
                } else {
                    out.push(ignore(IgnoreReason::AnswerInWrongState(self.state)));
                }
            }
            Input::RemoteDescriptionSet => match self.op {
                Some(Op::SettingRemoteOffer) => {
                    self.state = SignalingState::HaveRemoteOffer;
                    self.has_remote = true;
                    self.op = Some(Op::Answering);
                    out.extend(self.candidates.drain(..).map(Action::AddCandidate));
                    out.push(Action::CreateAnswer);
                }
                Some(Op::SettingRemoteAnswer) => {
                    self.state = SignalingState::Stable;
                    self.has_remote = true;
                    self.ignoring_offer = false;
                    self.op = None;
                    out.extend(self.candidates.drain(..).map(Action::AddCandidate));
                    self.on_stable(&mut out);
                }
                _ => out.push(ignore(IgnoreReason::Unexpected("remote description"))),
            },
            Input::LocalAnswerReady(sdp) => {
                if self.op != Some(Op::Answering) {
                    out.push(ignore(IgnoreReason::Unexpected("local answer")));
                    return out;
                }
                self.op = None;
                self.state = SignalingState::Stable;
                out.push(Action::SendAnswer(sdp));
                self.on_stable(&mut out);
            }
            Input::RemoteCandidate(c) => {
                let applying = matches!(self.op, Some(Op::SettingRemoteOffer | Op::SettingRemoteAnswer));
                if self.has_remote && !applying && !self.ignoring_offer {
                    out.push(Action::AddCandidate(c));
                } else if self.candidates.len() < MAX_BUFFERED_CANDIDATES {
                    self.candidates.push_back(c);
                } else {
                    out.push(ignore(IgnoreReason::CandidateBufferFull));
                }
            }
            Input::SignalingState(SignalingState::Closed) => self.close(),
            Input::SignalingState(state) => {
                if self.op.is_none() && state != self.state {
                    self.state = state;
                    if state == SignalingState::Stable {
                        self.on_stable(&mut out);
                    }
                }
            }
            Input::OperationFailed { state, reason } => {
                let failed = self.op.take();
                out.push(ignore(IgnoreReason::OperationFailed(reason)));
                if state == SignalingState::Closed {
                    self.close();
                    return out;
                }
                self.state = state;
                if failed == Some(Op::MakingOffer) {
                    // Offering again at once would most likely fail the same way.
                    self.pending = false;
                }
                if let Some(remote) = self.deferred_offer.take() {
                    self.remote_offer(remote, &mut out);
                } else if state == SignalingState::Stable {
                    self.on_stable(&mut out);
                }
            }
        }
        out
    }

    fn remote_offer(&mut self, sdp: String, out: &mut Vec<Action>) {
        match self.op {
            Some(Op::MakingOffer) => {
                self.collisions += 1;
                if self.polite {
                    // Roll back once our offer exists (LocalOfferReady), then take this one.
                    self.deferred_offer = Some(sdp);
                } else {
                    self.ignoring_offer = true;
                    out.push(ignore(IgnoreReason::CollidingOffer));
                }
            }
            // Busy applying a description; this offer is handled once that is done.
            Some(_) => self.deferred_offer = Some(sdp),
            None => match self.state {
                SignalingState::HaveLocalOffer => {
                    self.collisions += 1;
                    if self.polite {
                        self.accept_offer(sdp, out);
                    } else {
                        self.ignoring_offer = true;
                        out.push(ignore(IgnoreReason::CollidingOffer));
                    }
                }
                // have-remote-offer: an answer of ours failed; a new offer replaces the old.
                SignalingState::Stable | SignalingState::HaveRemoteOffer => {
                    self.ignoring_offer = false;
                    self.op = Some(Op::SettingRemoteOffer);
                    out.push(Action::SetRemoteOffer(sdp));
                }
                s => out.push(ignore(IgnoreReason::OfferInWrongState(s))),
            },
        }
    }

    /// The polite side drops its own offer (in `have-local-offer`) for the peer's.
    fn accept_offer(&mut self, sdp: String, out: &mut Vec<Action>) {
        self.state = SignalingState::Stable;
        self.ignoring_offer = false;
        // Whatever our offer carried still needs negotiating once this exchange is done.
        self.pending = true;
        self.op = Some(Op::SettingRemoteOffer);
        out.push(Action::Rollback);
        out.push(Action::SetRemoteOffer(sdp));
    }

    /// Back in stable with nothing in flight: handle what waited.
    fn on_stable(&mut self, out: &mut Vec<Action>) {
        if let Some(sdp) = self.deferred_offer.take() {
            self.remote_offer(sdp, out);
        } else if self.pending {
            self.pending = false;
            self.op = Some(Op::MakingOffer);
            out.push(Action::CreateOffer);
        }
    }

    fn close(&mut self) {
        self.state = SignalingState::Closed;
        self.op = None;
        self.pending = false;
        self.deferred_offer = None;
        self.candidates.clear();
    }
}

fn ignore(reason: IgnoreReason) -> Action {
    Action::Ignore { reason }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn cand(s: &str) -> IceCandidate {
        IceCandidate {
            candidate: s.into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        }
    }

    use Action as A;
    use Input as I;

    fn s(x: &str) -> String {
        x.to_owned()
    }

    fn ignored(reason: IgnoreReason) -> Action {
        Action::Ignore { reason }
    }

    #[test]
    fn single_negotiator_steps() {
        type Step = (Input, Vec<Action>);
        let cases: Vec<(&str, bool, Vec<Step>)> = vec![
            (
                "plain offer, answer, and a renegotiation remembered while in flight",
                false,
                vec![
                    (I::NegotiationNeeded, vec![A::CreateOffer]),
                    (I::NegotiationNeeded, vec![]),
                    (I::LocalOfferReady(s("o1")), vec![A::SendOffer(s("o1"))]),
                    (I::NegotiationNeeded, vec![]),
                    (I::RemoteAnswer(s("a1")), vec![A::SetRemoteAnswer(s("a1"))]),
                    (I::RemoteDescriptionSet, vec![A::CreateOffer]),
                    (I::LocalOfferReady(s("o2")), vec![A::SendOffer(s("o2"))]),
                    (I::RemoteAnswer(s("a2")), vec![A::SetRemoteAnswer(s("a2"))]),
                    (I::RemoteDescriptionSet, vec![]),
                ],
            ),
            (
                "answering a remote offer",
                true,
                vec![
                    (I::RemoteOffer(s("o")), vec![A::SetRemoteOffer(s("o"))]),
                    (I::RemoteDescriptionSet, vec![A::CreateAnswer]),
                    (I::LocalAnswerReady(s("a")), vec![A::SendAnswer(s("a"))]),
                ],
            ),
            (
                "glare on the polite side: roll back, answer, then offer again",
                true,
                vec![
                    (I::NegotiationNeeded, vec![A::CreateOffer]),
                    (I::LocalOfferReady(s("mine")), vec![A::SendOffer(s("mine"))]),
                    (
                        I::RemoteOffer(s("theirs")),
                        vec![A::Rollback, A::SetRemoteOffer(s("theirs"))],
                    ),
                    (I::RemoteDescriptionSet, vec![A::CreateAnswer]),
                    (I::LocalAnswerReady(s("a")), vec![A::SendAnswer(s("a")), A::CreateOffer]),
                ],
            ),
            (
                "glare on the impolite side: ignore the offer and its candidates until our answer",
                false,
                vec![
                    (I::RemoteCandidate(cand("early")), vec![]),
                    (I::NegotiationNeeded, vec![A::CreateOffer]),
                    (I::LocalOfferReady(s("mine")), vec![A::SendOffer(s("mine"))]),
                    (I::RemoteOffer(s("theirs")), vec![ignored(IgnoreReason::CollidingOffer)]),
                    (I::RemoteCandidate(cand("c1")), vec![]),
                    (I::RemoteAnswer(s("a")), vec![A::SetRemoteAnswer(s("a"))]),
                    (
                        I::RemoteDescriptionSet,
                        vec![A::AddCandidate(cand("early")), A::AddCandidate(cand("c1"))],
                    ),
                    (I::RemoteCandidate(cand("c2")), vec![A::AddCandidate(cand("c2"))]),
                ],
            ),
            (
                "the polite side gets an offer while its own is being made: it never sends its own",
                true,
                vec![
                    (I::NegotiationNeeded, vec![A::CreateOffer]),
                    (I::RemoteOffer(s("theirs")), vec![]),
                    (
                        I::LocalOfferReady(s("mine")),
                        vec![A::Rollback, A::SetRemoteOffer(s("theirs"))],
                    ),
                    (I::RemoteDescriptionSet, vec![A::CreateAnswer]),
                    (I::LocalAnswerReady(s("a")), vec![A::SendAnswer(s("a")), A::CreateOffer]),
                ],
            ),
            (
                "the impolite side gets an offer while its own is being made: ignored",
                false,
                vec![
                    (I::NegotiationNeeded, vec![A::CreateOffer]),
                    (I::RemoteOffer(s("theirs")), vec![ignored(IgnoreReason::CollidingOffer)]),
                    (I::LocalOfferReady(s("mine")), vec![A::SendOffer(s("mine"))]),
                ],
            ),
            (
                "candidates before the remote description are buffered and released in order",
                false,
                vec![
                    (I::RemoteCandidate(cand("c1")), vec![]),
                    (I::RemoteCandidate(cand("c2")), vec![]),
                    (I::RemoteOffer(s("o")), vec![A::SetRemoteOffer(s("o"))]),
                    (I::RemoteCandidate(cand("c3")), vec![]),
                    (
                        I::RemoteDescriptionSet,
                        vec![
                            A::AddCandidate(cand("c1")),
                            A::AddCandidate(cand("c2")),
                            A::AddCandidate(cand("c3")),
                            A::CreateAnswer,
                        ],
                    ),
                    (I::RemoteCandidate(cand("c4")), vec![A::AddCandidate(cand("c4"))]),
                ],
            ),
            (
                "an answer in the wrong state is ignored, not fatal",
                false,
                vec![
                    (
                        I::RemoteAnswer(s("stray")),
                        vec![ignored(IgnoreReason::AnswerInWrongState(SignalingState::Stable))],
                    ),
                    (I::RemoteOffer(s("o")), vec![A::SetRemoteOffer(s("o"))]),
                    (I::RemoteDescriptionSet, vec![A::CreateAnswer]),
                    (
                        I::RemoteAnswer(s("stray")),
                        vec![ignored(IgnoreReason::AnswerInWrongState(
                            SignalingState::HaveRemoteOffer,
                        ))],
                    ),
                    (I::LocalAnswerReady(s("a")), vec![A::SendAnswer(s("a"))]),
                    (I::NegotiationNeeded, vec![A::CreateOffer]),
                ],
            ),
            (
                "an offer while an answer is being applied waits until stable",
                false,
                vec![
                    (I::NegotiationNeeded, vec![A::CreateOffer]),
                    (I::LocalOfferReady(s("o1")), vec![A::SendOffer(s("o1"))]),
                    (I::RemoteAnswer(s("a1")), vec![A::SetRemoteAnswer(s("a1"))]),
                    (I::RemoteOffer(s("o2")), vec![]),
                    (I::RemoteDescriptionSet, vec![A::SetRemoteOffer(s("o2"))]),
                ],
            ),
            (
                "completion reports nobody asked for are ignored",
                true,
                vec![
                    (
                        I::LocalOfferReady(s("o")),
                        vec![ignored(IgnoreReason::Unexpected("local offer"))],
                    ),
                    (
                        I::LocalAnswerReady(s("a")),
                        vec![ignored(IgnoreReason::Unexpected("local answer"))],
                    ),
                    (
                        I::RemoteDescriptionSet,
                        vec![ignored(IgnoreReason::Unexpected("remote description"))],
                    ),
                    (I::NegotiationNeeded, vec![A::CreateOffer]),
                ],
            ),
            (
                "a failed offer is reported and does not loop",
                false,
                vec![
                    (I::NegotiationNeeded, vec![A::CreateOffer]),
                    (I::NegotiationNeeded, vec![]),
                    (
                        I::OperationFailed {
                            state: SignalingState::Stable,
                            reason: s("boom"),
                        },
                        vec![ignored(IgnoreReason::OperationFailed(s("boom")))],
                    ),
                    (I::NegotiationNeeded, vec![A::CreateOffer]),
                ],
            ),
            (
                "a bad remote offer is reported; the next one is taken",
                false,
                vec![
                    (I::RemoteOffer(s("garbage")), vec![A::SetRemoteOffer(s("garbage"))]),
                    (
                        I::OperationFailed {
                            state: SignalingState::Stable,
                            reason: s("bad sdp"),
                        },
                        vec![ignored(IgnoreReason::OperationFailed(s("bad sdp")))],
                    ),
                    (I::RemoteOffer(s("o")), vec![A::SetRemoteOffer(s("o"))]),
                ],
            ),
            (
                "a failed answer leaves have-remote-offer; the peer's next offer replaces it",
                false,
                vec![
                    (I::RemoteOffer(s("o1")), vec![A::SetRemoteOffer(s("o1"))]),
                    (I::RemoteDescriptionSet, vec![A::CreateAnswer]),
                    (
                        I::OperationFailed {
                            state: SignalingState::HaveRemoteOffer,
                            reason: s("no codecs"),
                        },
                        vec![ignored(IgnoreReason::OperationFailed(s("no codecs")))],
                    ),
                    (I::RemoteOffer(s("o2")), vec![A::SetRemoteOffer(s("o2"))]),
                ],
            ),
            (
                "the reported state is adopted when idle",
                false,
                vec![
                    (I::SignalingState(SignalingState::HaveLocalOffer), vec![]),
                    (I::NegotiationNeeded, vec![]),
                    (I::SignalingState(SignalingState::Stable), vec![A::CreateOffer]),
                    // In flight: a report does not override what the machine waits for.
                    (I::SignalingState(SignalingState::HaveRemoteOffer), vec![]),
                    (I::LocalOfferReady(s("o")), vec![A::SendOffer(s("o"))]),
                ],
            ),
            (
                "after close everything is ignored",
                true,
                vec![
                    (I::RemoteCandidate(cand("c")), vec![]),
                    (I::SignalingState(SignalingState::Closed), vec![]),
                    (I::NegotiationNeeded, vec![ignored(IgnoreReason::Closed)]),
                    (I::RemoteOffer(s("o")), vec![ignored(IgnoreReason::Closed)]),
                ],
            ),
        ];
        for (name, polite, steps) in cases {
            let mut n = Negotiator::new(polite);
            for (i, (input, want)) in steps.into_iter().enumerate() {
                let got = n.handle(input.clone());
                assert_eq!(got, want, "{name}: step {i} ({input:?})");
            }
        }
    }

    #[test]
    fn the_candidate_buffer_is_bounded() {
        let mut n = Negotiator::new(false);
        for i in 0..MAX_BUFFERED_CANDIDATES {
            assert_eq!(n.handle(I::RemoteCandidate(cand(&i.to_string()))), vec![]);
        }
        assert_eq!(
            n.handle(I::RemoteCandidate(cand("one too many"))),
            vec![ignored(IgnoreReason::CandidateBufferFull)]
        );
        assert_eq!(n.buffered_candidates(), MAX_BUFFERED_CANDIDATES);
        n.handle(I::RemoteOffer(s("o")));
        let out = n.handle(I::RemoteDescriptionSet);
        assert_eq!(out.len(), MAX_BUFFERED_CANDIDATES + 1);
        assert_eq!(out[0], A::AddCandidate(cand("0")));
        assert_eq!(n.buffered_candidates(), 0);
    }

    #[test]
    fn collisions_are_counted_on_both_sides() {
        let mut n = Negotiator::new(true);
        n.handle(I::NegotiationNeeded);
        n.handle(I::LocalOfferReady(s("o")));
        n.handle(I::RemoteOffer(s("x")));
        assert_eq!(n.collisions(), 1);
        let mut n = Negotiator::new(false);
        n.handle(I::NegotiationNeeded);
        n.handle(I::RemoteOffer(s("x")));
        assert_eq!(n.collisions(), 1);
    }

    // ---------- two negotiators back to back through fake peer connections ----------

    /// A peer connection that models the signaling states the way the `webrtc` crate does:
    /// no implicit rollback (a remote offer in have-local-offer is an error), candidates only
    /// after a remote description, negotiation-needed in stable whenever the sent streams
    /// differ from those the last completed exchange agreed on. An SDP is the JSON list of the
    /// stream ids its author sends; an answer carries none (the answerer's new streams need an
    /// offer of its own).
    #[derive(Debug, Default)]
    struct FakePc {
        name: char,
        state: Option<SignalingState>,
        sending: BTreeSet<String>,
        negotiated: BTreeSet<String>,
        offered: Vec<String>,
        received: BTreeSet<String>,
        has_remote: bool,
        gathered: bool,
        added: Vec<String>,
        errors: Vec<String>,
    }

    impl FakePc {
        fn new(name: char) -> Self {
            FakePc {
                name,
                state: Some(SignalingState::Stable),
                ..Default::default()
            }
        }

        fn state(&self) -> SignalingState {
            self.state.unwrap_or(SignalingState::Stable)
        }

        fn needs_negotiation(&self) -> bool {
            self.state() == SignalingState::Stable && self.sending != self.negotiated
        }

        /// The first local description starts gathering: two candidates trickle out.
        fn gather(&mut self) -> Vec<IceCandidate> {
            if std::mem::replace(&mut self.gathered, true) {
                return vec![];
            }
            (1..=2).map(|i| cand(&format!("{}-{i}", self.name))).collect()
        }

        fn expect(&self, want: SignalingState, what: &str) -> Result<(), String> {
            if self.state() == want {
                Ok(())
            } else {
                Err(format!("{what} in {}", self.state()))
            }
        }

        fn create_offer(&mut self) -> Result<String, String> {
            self.expect(SignalingState::Stable, "offer")?;
            self.offered = self.sending.iter().cloned().collect();
            self.state = Some(SignalingState::HaveLocalOffer);
            Ok(serde_json::to_string(&self.offered).expect("serialises"))
        }

        fn rollback(&mut self) -> Result<(), String> {
            self.expect(SignalingState::HaveLocalOffer, "rollback")?;
            self.state = Some(SignalingState::Stable);
            self.offered.clear();
            Ok(())
        }

        fn set_remote_offer(&mut self, sdp: &str) -> Result<(), String> {
            if !matches!(self.state(), SignalingState::Stable | SignalingState::HaveRemoteOffer) {
                return Err(format!("remote offer in {} (no implicit rollback)", self.state()));
            }
            let ids: Vec<String> = serde_json::from_str(sdp).map_err(|e| e.to_string())?;
            self.received.extend(ids);
            self.has_remote = true;
            self.state = Some(SignalingState::HaveRemoteOffer);
            Ok(())
        }

        fn create_answer(&mut self) -> Result<String, String> {
            self.expect(SignalingState::HaveRemoteOffer, "answer")?;
            self.state = Some(SignalingState::Stable);
            Ok("[]".into())
        }

        fn set_remote_answer(&mut self) -> Result<(), String> {
            self.expect(SignalingState::HaveLocalOffer, "remote answer")?;
            self.negotiated = self.offered.drain(..).collect();
            self.has_remote = true;
            self.state = Some(SignalingState::Stable);
            Ok(())
        }

        fn add_candidate(&mut self, c: &IceCandidate) {
            if self.has_remote {
                self.added.push(c.candidate.clone());
            } else {
                self.errors
                    .push(format!("candidate {} without a remote description", c.candidate));
            }
        }
    }

    #[derive(Debug)]
    enum Msg {
        Offer(String),
        Answer(String),
        Candidate(IceCandidate),
    }

    #[derive(Debug)]
    struct Side {
        neg: Negotiator,
        pc: FakePc,
        /// Batches of actions, each performed as a whole.
        todo: VecDeque<Vec<Action>>,
        /// Completion reports and pc events, fed to the negotiator later.
        inbox: VecDeque<Input>,
        /// Signaling messages to the other side, in relay order.
        wire: VecDeque<Msg>,
        /// Streams still to be added, one scheduler move each.
        to_add: VecDeque<String>,
        ignored: Vec<IgnoreReason>,
    }

    impl Side {
        fn new(name: char, polite: bool, tracks: &[&str]) -> Side {
            Side {
                neg: Negotiator::new(polite),
                pc: FakePc::new(name),
                todo: VecDeque::new(),
                inbox: VecDeque::new(),
                wire: VecDeque::new(),
                to_add: tracks.iter().map(|t| t.to_string()).collect(),
                ignored: Vec::new(),
            }
        }

        fn feed(&mut self, input: Input) {
            let actions = self.neg.handle(input);
            if !actions.is_empty() {
                self.todo.push_back(actions);
            }
        }

        fn add_track(&mut self, id: String) {
            self.pc.sending.insert(id);
            if self.pc.needs_negotiation() {
                self.inbox.push_back(I::NegotiationNeeded);
            }
        }

        /// Performs one batch the way the contract says: in order, stopping at a failure.
        fn perform(&mut self, batch: Vec<Action>) {
            for action in batch {
                let result = match action {
                    A::CreateOffer => self.pc.create_offer().map(|sdp| {
                        let cands = self.pc.gather();
                        self.wire.extend(cands.into_iter().map(Msg::Candidate));
                        Some(I::LocalOfferReady(sdp))
                    }),
                    A::Rollback => self.pc.rollback().map(|()| None),
                    A::SetRemoteOffer(sdp) => self.pc.set_remote_offer(&sdp).map(|()| Some(I::RemoteDescriptionSet)),
                    A::SetRemoteAnswer(_) => self.pc.set_remote_answer().map(|()| Some(I::RemoteDescriptionSet)),
                    A::CreateAnswer => self.pc.create_answer().map(|sdp| {
                        let cands = self.pc.gather();
                        self.wire.extend(cands.into_iter().map(Msg::Candidate));
                        Some(I::LocalAnswerReady(sdp))
                    }),
                    A::AddCandidate(c) => {
                        self.pc.add_candidate(&c);
                        Ok(None)
                    }
                    A::SendOffer(sdp) => {
                        self.wire.push_back(Msg::Offer(sdp));
                        Ok(None)
                    }
                    A::SendAnswer(sdp) => {
                        self.wire.push_back(Msg::Answer(sdp));
                        Ok(None)
                    }
                    A::Ignore { reason } => {
                        self.ignored.push(reason);
                        Ok(None)
                    }
                };
                match result {
                    Ok(Some(input)) => self.inbox.push_back(input),
                    Ok(None) => {}
                    Err(reason) => {
                        self.pc.errors.push(reason.clone());
                        self.inbox.push_back(I::OperationFailed {
                            state: self.pc.state(),
                            reason,
                        });
                        break;
                    }
                }
            }
            // Back in stable with streams nobody negotiated: the pc fires negotiation-needed.
            if self.pc.needs_negotiation() {
                self.inbox.push_back(I::NegotiationNeeded);
            }
        }
    }

    /// A deterministic pseudo-random scheduler (64-bit LCG): the seed picks the interleaving.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    /// Runs both sides to quiescence with moves interleaved by `seed`; returns both sides.
    fn run(seed: u64, a_tracks: &[&str], b_tracks: &[&str]) -> [Side; 2] {
        // a is the lower id: polite.
        let mut sides = [Side::new('a', true, a_tracks), Side::new('b', false, b_tracks)];
        let mut rng = Lcg(seed);
        for step in 0.. {
            assert!(step < 10_000, "seed {seed}: no quiescence: {sides:?}");
            // Moves: per side, add a track / perform a batch / feed an input / deliver a message.
            let mut moves = Vec::new();
            for (i, s) in sides.iter().enumerate() {
                if !s.to_add.is_empty() {
                    moves.push((i, 0));
                }
                if !s.todo.is_empty() {
                    moves.push((i, 1));
                }
                if !s.inbox.is_empty() {
                    moves.push((i, 2));
                }
                if !s.wire.is_empty() {
                    moves.push((i, 3));
                }
            }
            if moves.is_empty() {
                break;
            }
            let (i, kind) = moves[rng.below(moves.len())];
            let [a, b] = &mut sides;
            let (me, other) = if i == 0 { (a, b) } else { (b, a) };
            match kind {
                0 => {
                    let id = me.to_add.pop_front().expect("a move only when non-empty");
                    me.add_track(id);
                }
                1 => {
                    let batch = me.todo.pop_front().expect("a move only when non-empty");
                    me.perform(batch);
                }
                2 => {
                    let input = me.inbox.pop_front().expect("a move only when non-empty");
                    me.feed(input);
                }
                _ => {
                    let input = match me.wire.pop_front().expect("a move only when non-empty") {
                        Msg::Offer(sdp) => I::RemoteOffer(sdp),
                        Msg::Answer(sdp) => I::RemoteAnswer(sdp),
                        Msg::Candidate(c) => I::RemoteCandidate(c),
                    };
                    other.feed(input);
                }
            }
        }
        sides
    }

    fn converged(seed: u64, sides: &[Side; 2]) {
        for (me, other) in [(&sides[0], &sides[1]), (&sides[1], &sides[0])] {
            let who = me.pc.name;
            assert!(me.neg.is_settled(), "seed {seed}: {who} not settled: {:?}", me.neg);
            assert_eq!(me.pc.state(), SignalingState::Stable, "seed {seed}: {who}");
            assert_eq!(
                me.pc.negotiated, me.pc.sending,
                "seed {seed}: {who} negotiated all it sends"
            );
            assert!(
                other.pc.sending.is_subset(&me.pc.received),
                "seed {seed}: {who} receives everything {} sends",
                other.pc.name
            );
            assert_eq!(me.pc.errors, Vec::<String>::new(), "seed {seed}: {who} pc errors");
            let mut added = me.pc.added.clone();
            added.sort();
            added.dedup();
            let want: Vec<String> = (1..=2).map(|i| format!("{}-{i}", other.pc.name)).collect();
            assert_eq!(added, want, "seed {seed}: {who} added every candidate of its peer");
            assert!(
                me.ignored.iter().all(|r| *r == IgnoreReason::CollidingOffer),
                "seed {seed}: {who} ignored {:?}",
                me.ignored
            );
        }
    }

    #[test]
    fn back_to_back_negotiators_converge_under_every_interleaving_tried() {
        let scenarios: [(&str, &[&str], &[&str]); 5] = [
            ("the polite side adds a track", &["a1"], &[]),
            ("the impolite side adds a track", &[], &["b1"]),
            ("both add a track at once", &["a1"], &["b1"]),
            ("both add two tracks", &["a1", "a2"], &["b1", "b2"]),
            ("one side adds three", &["a1", "a2", "a3"], &[]),
        ];
        for (name, a, b) in scenarios {
            let mut glare = [0u32; 2];
            for seed in 0..400 {
                let sides = run(seed, a, b);
                converged(seed, &sides);
                glare[0] += sides[0].neg.collisions();
                glare[1] += sides[1].neg.collisions();
            }
            if !a.is_empty() && !b.is_empty() {
                // The interleavings explored include glare seen from both sides.
                assert!(glare[0] > 10 && glare[1] > 10, "{name}: too little glare: {glare:?}");
            } else {
                assert_eq!(glare, [0, 0], "{name}: no glare with one offerer");
            }
        }
    }

    #[test]
    fn glare_from_both_sides_resolves_with_one_rollback_on_the_polite_side() {
        // Both offers are out before either arrives: a certain collision.
        let mut a = Side::new('a', true, &[]);
        let mut b = Side::new('b', false, &[]);
        a.add_track("a1".into());
        b.add_track("b1".into());
        for s in [&mut a, &mut b] {
            while let Some(i) = s.inbox.pop_front() {
                s.feed(i);
                while let Some(batch) = s.todo.pop_front() {
                    s.perform(batch);
                }
            }
        }
        assert_eq!(a.pc.state(), SignalingState::HaveLocalOffer);
        assert_eq!(b.pc.state(), SignalingState::HaveLocalOffer);
        let offer = |s: &Side| {
            s.wire
                .iter()
                .find_map(|m| match m {
                    Msg::Offer(sdp) => Some(sdp.clone()),
                    _ => None,
                })
                .expect("an offer was sent")
        };
        let (offer_a, offer_b) = (offer(&a), offer(&b));
        assert_eq!(
            b.neg.handle(I::RemoteOffer(offer_a)),
            vec![ignored(IgnoreReason::CollidingOffer)]
        );
        assert_eq!(
            a.neg.handle(I::RemoteOffer(offer_b.clone())),
            vec![A::Rollback, A::SetRemoteOffer(offer_b)]
        );
    }
}
