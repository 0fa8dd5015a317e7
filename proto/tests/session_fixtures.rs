//! Scenario fixtures in `tests/data/session/`: relay packets and local intents go into a
//! [`Session`], and the events and packets that come out must be the ones the fixture lists.
//! The web client's `Room` runs the same files (`web/test/unit/session-fixtures.test.ts`), so
//! the two implementations cannot drift.
//!
//! A fixture step is one of
//! - `{"relay": <clientbound packet>}`: a packet from the relay, as JSON;
//! - `{"message": {"from": 3, "inner": <relay message>}}`: a sealed message the relay stamped
//!   with sender 3, sealed by the test with the fixture's key (`"claims": 5` seals another
//!   sender inside, `"key"` seals with another key, `"plaintext"` seals raw text, `"sealed"`
//!   is the message string itself);
//! - `{"provide": <provide info>}` / `{"provide_stop": "id"}`: a local intent;
//!
//! each with `"events"` (normalised, see [`normalise`]) and `"sent"` (`{"join": ...}`, or
//! `{"relay": {"to": id | null, "inner": <opened relay message>}}`), both empty when absent.

use std::fs;
use std::path::{Path, PathBuf};

use keks_proto::crypto::RoomKey;
use keks_proto::packets::{ClientId, ClientboundPacket, ProvideInfo, ResourceId, RoomHash, ServerboundPacket};
use keks_proto::session::{Event, Output, Session};
use serde_json::{Value, json};

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/session");
    let mut files: Vec<PathBuf> = fs::read_dir(&root)
        .expect("fixture directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn key_from_hex(s: &str) -> RoomKey {
    let bytes: [u8; 32] = hex::decode(s).expect("hex key").try_into().expect("32 bytes");
    RoomKey::from_bytes(bytes)
}

fn id(v: &Value) -> ClientId {
    ClientId(v.as_u64().expect("a client id"))
}

/// The fixture's view of an event: the same shape the web test builds from `RoomEvents`.
fn normalise(e: &Event) -> Value {
    match e {
        Event::Ready { id } => json!({ "ready": id.0 }),
        Event::Joined { id } => json!({ "join": id.0 }),
        Event::Left { id, resources } => {
            let mut r: Vec<&str> = resources.iter().map(|r| r.0.as_str()).collect();
            r.sort();
            json!({ "leave": { "id": id.0, "resources": r } })
        }
        Event::Identified { id, username } => json!({ "identify": { "id": id.0, "username": username } }),
        Event::Provided { from, info } => json!({ "provide": { "from": from.0, "info": v(info) } }),
        Event::ProvideUpdated { from, info } => json!({ "provide_update": { "from": from.0, "info": v(info) } }),
        Event::ProvideStopped { from, id } => json!({ "provide_stop": { "from": from.0, "id": id.0 } }),
        Event::Requested { from, id } => json!({ "request": { "from": from.0, "id": id.0 } }),
        Event::RequestStopped { from, id } => json!({ "request_stop": { "from": from.0, "id": id.0 } }),
        Event::Chat { from, message } => json!({ "chat": { "from": from.0, "message": v(message) } }),
        Event::Offer { from, sdp } => json!({ "offer": { "from": from.0, "sdp": sdp } }),
        Event::Answer { from, sdp } => json!({ "answer": { "from": from.0, "sdp": sdp } }),
        Event::IceCandidate { from, candidate } => {
            json!({ "ice_candidate": { "from": from.0, "candidate": v(candidate) } })
        }
        Event::Preview { from, id, data } => json!({ "preview": { "from": from.0, "id": id.0, "data": data } }),
        Event::RoomInfo { hash, user_count } => json!({ "room_info": { "hash": hash, "user_count": user_count } }),
        Event::Ignored { from, .. } => json!({ "ignored": from.map(|f| f.0) }),
    }
}

fn v<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).expect("serialisable")
}

/// Opens what the session sent, so the fixture compares plaintexts (IVs are random).
fn sent_form(p: &ServerboundPacket, key: &RoomKey, me: ClientId) -> Value {
    match p {
        ServerboundPacket::Relay { recipient, message } => {
            let inner = key
                .open_message(me, message)
                .expect("we seal what we send as ourselves");
            json!({ "relay": { "to": recipient.map(|r| r.0), "inner": inner } })
        }
        other => serde_json::to_value(other).expect("serialisable"),
    }
}

fn seal_step(m: &Value, key: &RoomKey) -> String {
    if let Some(raw) = m.get("sealed") {
        return raw.as_str().expect("sealed is a string").to_owned();
    }
    let key = m
        .get("key")
        .map_or_else(|| key.clone(), |k| key_from_hex(k.as_str().expect("hex")));
    let plaintext = match m.get("plaintext") {
        Some(p) => p.as_str().expect("plaintext is a string").to_owned(),
        None => {
            let sender = m.get("claims").unwrap_or(&m["from"]);
            json!({ "sender": sender, "inner": m["inner"] }).to_string()
        }
    };
    key.seal(plaintext.as_bytes()).expect("randomness")
}

fn run(path: &Path) -> usize {
    let name = path.file_name().expect("a file").to_string_lossy();
    let text = fs::read_to_string(path).expect("readable fixture");
    let fixture: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let key = key_from_hex(fixture["key"].as_str().expect("key"));
    let hash: RoomHash = fixture["hash"].as_str().expect("hash").parse().expect("a room hash");
    let mut session = Session::with_key(key.clone(), hash, fixture["username"].as_str().expect("username"));
    let steps = fixture["steps"].as_array().expect("steps");
    for (i, step) in steps.iter().enumerate() {
        let outputs: Vec<Output> = if let Some(p) = step.get("relay") {
            let packet: ClientboundPacket = serde_json::from_value(p.clone()).expect("a clientbound packet");
            session.handle(packet)
        } else if let Some(m) = step.get("message") {
            session.handle(ClientboundPacket::Message {
                sender: id(&m["from"]),
                message: seal_step(m, &key),
            })
        } else if let Some(info) = step.get("provide") {
            let info: ProvideInfo = serde_json::from_value(info.clone()).expect("provide info");
            vec![Output::Send(session.provide(info).expect("a fresh id"))]
        } else if let Some(id) = step.get("provide_stop") {
            let id = ResourceId(id.as_str().expect("an id").to_owned());
            vec![Output::Send(session.provide_stop(&id).expect("a local resource"))]
        } else {
            panic!("{name}: step {i}: unknown step {step}");
        };
        let me = session.id().expect("every fixture starts with init");
        let mut events = Vec::new();
        let mut sent = Vec::new();
        for o in &outputs {
            match o {
                Output::Event(e) => events.push(normalise(e)),
                Output::Send(p) => sent.push(sent_form(p, &key, me)),
            }
        }
        let want = |k: &str| step.get(k).cloned().unwrap_or_else(|| json!([]));
        assert_eq!(
            Value::Array(events),
            want("events"),
            "{name}: step {i}: events for {step}"
        );
        assert_eq!(Value::Array(sent), want("sent"), "{name}: step {i}: sent for {step}");
    }
    steps.len()
}

#[test]
fn every_session_fixture_passes() {
    let files = fixtures();
    assert!(files.len() >= 10, "fixtures missing: {files:?}");
    let steps: usize = files.iter().map(|f| run(f)).sum();
    assert!(steps > 80, "only {steps} steps");
}
