//! Opening arbitrary "ciphertexts" never panics: every failure is an error value. Inputs
//! that start with 0x00 are sealed first, so the fuzzer also reaches the JSON parser behind
//! a successful decryption.
#![no_main]

use keks_proto::crypto::RoomKey;
use keks_proto::packets::ClientId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = RoomKey::from_bytes([42; 32]);
    match data.split_first() {
        Some((0, plaintext)) => {
            let sealed = key.seal_with_iv([7; 12], plaintext);
            let _ = key.open_message(ClientId(1), &sealed);
        }
        _ => {
            let text = String::from_utf8_lossy(data);
            let _ = key.open(&text);
            let _ = key.open_message(ClientId(1), &text);
        }
    }
});
