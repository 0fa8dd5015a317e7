//! Golden JSON fixtures in `tests/data/`: every packet kind parses and serialises back to the
//! same bytes, and the crypto fixtures (computed with another implementation) open. The web
//! client's tests read the same files, so the two implementations cannot drift.

use std::fs;
use std::path::{Path, PathBuf};

use keks_proto::crypto::{RoomKey, room_hash};
use keks_proto::packets::{ClientId, ClientboundPacket, RelayMessage, RelayMessageWrapper, ServerboundPacket};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn data(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&root)
        .expect("fixture directory exists")
        .map(|e| e.expect("readable entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", root.display());
    files
}

fn round_trip<T: Serialize + DeserializeOwned + std::fmt::Debug>(dir: &str) -> usize {
    let files = data(dir);
    for path in &files {
        let text = fs::read_to_string(path).expect("readable fixture");
        let text = text.trim_end();
        let value: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let back = serde_json::to_string(&value).expect("serialises");
        assert_eq!(back, text, "{} does not round-trip byte for byte", path.display());
    }
    files.len()
}

#[test]
fn serverbound_fixtures_round_trip() {
    assert_eq!(round_trip::<ServerboundPacket>("serverbound"), 6);
}

#[test]
fn clientbound_fixtures_round_trip() {
    assert_eq!(round_trip::<ClientboundPacket>("clientbound"), 5);
}

#[test]
fn relay_fixtures_round_trip() {
    let files = data("relay");
    for path in &files {
        let text = fs::read_to_string(path).expect("readable fixture");
        let text = text.trim_end();
        let back = if path.ends_with("wrapper.json") {
            let w: RelayMessageWrapper = serde_json::from_str(text).expect("wrapper parses");
            serde_json::to_string(&w)
        } else {
            let m: RelayMessage = serde_json::from_str(text).expect("message parses");
            assert!(
                !matches!(m, RelayMessage::Unknown { .. }),
                "{} parsed as unknown",
                path.display()
            );
            serde_json::to_string(&m)
        };
        assert_eq!(back.expect("serialises"), text, "{}", path.display());
    }
    assert_eq!(files.len(), 13);
}

#[derive(serde::Deserialize)]
struct Vector {
    secret: String,
    key: String,
    hash: String,
}

#[test]
fn crypto_vectors() {
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/crypto/vectors.json"))
        .expect("vectors exist");
    let vectors: Vec<Vector> = serde_json::from_str(&text).expect("vectors parse");
    for v in vectors {
        assert_eq!(hex::encode(RoomKey::derive(&v.secret).as_bytes()), v.key);
        assert_eq!(room_hash(&v.secret).to_string(), v.hash);
    }
}

#[derive(serde::Deserialize)]
struct Sealed {
    secret: String,
    iv: String,
    plaintext: String,
    sealed: String,
}

#[test]
fn sealed_fixture_opens_and_reseals_identically() {
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/crypto/sealed.json"))
        .expect("fixture exists");
    let f: Sealed = serde_json::from_str(&text).expect("fixture parses");
    let key = RoomKey::derive(&f.secret);
    assert_eq!(key.open(&f.sealed).expect("opens"), f.plaintext.as_bytes());
    let iv: [u8; 12] = hex::decode(&f.iv).expect("hex").try_into().expect("12 bytes");
    assert_eq!(key.seal_with_iv(iv, f.plaintext.as_bytes()), f.sealed);
    let msg = key.open_message(ClientId(3), &f.sealed).expect("a chat from 3");
    assert!(matches!(msg, RelayMessage::Chat(_)));
}
