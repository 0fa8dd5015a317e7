//! The one DNS label check, shared by the certificate's names ([`crate::tls::names`]) and
//! the mDNS host name ([`crate::mdns`]).

/// Checks one dot-separated part of a host name (RFC 1123): 1 to 63 letters, digits and
/// '-', not starting or ending with '-'. The error says what is wrong, for a person.
pub fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() || label.len() > 63 {
        return Err("each dot-separated part must have 1 to 63 characters");
    }
    if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err("only letters, digits, '-' and '.' are allowed");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a part may not start or end with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for (label, ok) in [
            ("keksbox", true),
            ("room-2", true),
            ("a", true),
            ("", false),
            ("-x", false),
            ("x-", false),
            ("under_score", false),
            ("two words", false),
            (&"a".repeat(64), false),
            (&"a".repeat(63), true),
        ] {
            assert_eq!(check_label(label).is_ok(), ok, "{label:?}");
        }
    }
}
