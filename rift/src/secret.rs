//! Room secrets people can read aloud.
//!
//! A generated secret is 128 random bits written as eight five-letter syllable groups
//! ("proquints": consonant-vowel-consonant-vowel-consonant, 16 bits each, from 16 consonants
//! and 4 vowels), e.g. `lusab-babad-gutih-tugad-...`. Letters that sound alike are not both
//! in the alphabet, there are no digits to confuse with letters, and the dashes give a
//! reader a place to breathe. It is also what goes after `#` in the browser link.

const CONSONANTS: &[u8; 16] = b"bdfghjklmnprstvz";
const VOWELS: &[u8; 4] = b"aiou";

/// Bits of randomness in a generated secret.
pub const SECRET_BITS: usize = 128;

/// A new secret from the operating system's random source.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; SECRET_BITS / 8];
    getrandom::fill(&mut bytes)?;
    Ok(encode(&bytes))
}

/// The proquint spelling of `bytes` (an even number of them).
pub fn encode(bytes: &[u8]) -> String {
    bytes
        .chunks(2)
        .map(|pair| {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            let c = |shift: u16| CONSONANTS[usize::from((word >> shift) & 0xf)] as char;
            let v = |shift: u16| VOWELS[usize::from((word >> shift) & 0x3)] as char;
            [c(12), v(10), c(6), v(4), c(0)].iter().collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_spellings() {
        // 127.0.0.1 and 63.84.220.193 as 16-bit words, the proquint spec's own examples.
        assert_eq!(encode(&[127, 0, 0, 1]), "lusab-babad");
        assert_eq!(encode(&[63, 84, 220, 193]), "gutih-tugad");
    }

    #[test]
    fn generated_secrets_are_long_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 8 * 5 + 7);
        assert!(
            a.bytes()
                .all(|c| c == b'-' || CONSONANTS.contains(&c) || VOWELS.contains(&c))
        );
    }

    #[test]
    fn every_bit_changes_the_spelling() {
        let base = encode(&[0; 16]);
        for bit in 0..128 {
            let mut bytes = [0u8; 16];
            bytes[bit / 8] |= 1 << (bit % 8);
            assert_ne!(encode(&bytes), base, "bit {bit}");
        }
    }
}
