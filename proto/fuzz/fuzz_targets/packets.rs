//! Packet parsing never panics, and whatever parses serialises back to something that parses
//! to the same value.
#![no_main]

use keks_proto::packets::{ClientboundPacket, RelayMessage, RelayMessageWrapper, ServerboundPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = serde_json::from_slice::<ServerboundPacket>(data) {
        let again = serde_json::to_vec(&p).expect("a parsed serverbound packet serialises");
        assert_eq!(serde_json::from_slice::<ServerboundPacket>(&again).expect("reparses"), p);
    }
    if let Ok(p) = serde_json::from_slice::<ClientboundPacket>(data) {
        // Unknown kinds do not serialise, by design; the rest must round-trip.
        if let Ok(again) = serde_json::to_vec(&p) {
            assert_eq!(serde_json::from_slice::<ClientboundPacket>(&again).expect("reparses"), p);
        }
    }
    let _ = serde_json::from_slice::<RelayMessage>(data);
    let _ = serde_json::from_slice::<RelayMessageWrapper>(data);
});
