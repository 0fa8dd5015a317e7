//! The name policy: which DNS names and addresses the generated certificate covers.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::error::TlsError;

/// The names (DNS names and IP addresses) a certificate covers, normalised: DNS names lower
/// case without a trailing dot, IP addresses in their canonical text form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames(BTreeSet<String>);

impl CertNames {
    /// The names the generated certificate must cover on this box.
    ///
    /// `mdns_host` is the announced host name (`keksbox.local`), `system_host` the kernel's host
    /// name (gets `.local` appended when it has no dot; skipped when it is not a valid DNS
    /// name, since it is not under our control), `ips` the box's addresses, `extra` the
    /// configured `tls.extra_names` (an invalid one is an error).
    pub fn required(
        mdns_host: &str,
        system_host: Option<&str>,
        ips: &[IpAddr],
        extra: &[String],
    ) -> Result<Self, TlsError> {
        let mut names = BTreeSet::new();
        names.insert(normalize(mdns_host)?);
        names.insert("localhost".to_owned());
        if let Some(host) = system_host {
            // avahi and systemd-resolved announce the first label of the host name under
            // .local; a fully qualified host name is covered as it is, too.
            let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
            let short = host.split('.').next().unwrap_or_default();
            let candidates = [
                Some(format!("{short}.local")),
                host.contains('.').then_some(host.clone()),
            ];
            for candidate in candidates.into_iter().flatten() {
                match normalize(&candidate) {
                    Ok(name) if host_is_useful(&name) => {
                        names.insert(name);
                    }
                    Ok(_) => {}
                    Err(e) => log::debug!("system host name left out of the certificate: {e}"),
                }
            }
        }
        names.extend(ips.iter().map(|ip| ip.to_string()));
        for name in extra {
            names.insert(normalize(name)?);
        }
        Ok(Self(names))
    }

    /// Whether every name in `other` is covered by `self`.
    pub fn covers(&self, other: &CertNames) -> bool {
        other.0.is_subset(&self.0)
    }

    /// The names in `self` that `other` lacks.
    pub fn missing_from<'a>(&'a self, other: &CertNames) -> Vec<&'a str> {
        self.0
            .iter()
            .filter(|n| !other.0.contains(*n))
            .map(String::as_str)
            .collect()
    }

    /// Whether the certificate covers this name (normalised first).
    pub fn contains(&self, name: &str) -> bool {
        normalize(name).is_ok_and(|n| self.0.contains(&n))
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Parses the `names` file written next to a generated certificate: one name a line.
    pub(crate) fn parse(text: &str) -> Result<Self, TlsError> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(normalize)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::from("# Names the generated certificate covers; written by keksbox.\n");
        for name in &self.0 {
            out.push_str(name);
            out.push('\n');
        }
        out
    }
}

/// Lower-cases a DNS name, drops a trailing dot, and checks it (or parses an IP address).
pub(crate) fn normalize(name: &str) -> Result<String, TlsError> {
    let bad = |reason| TlsError::BadName {
        name: name.to_owned(),
        reason,
    };
    let trimmed = name.trim();
    if let Ok(ip) = trimmed.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let dns = trimmed.trim_end_matches('.').to_ascii_lowercase();
    if dns.is_empty() {
        return Err(bad("it is empty"));
    }
    if dns.len() > 253 {
        return Err(bad("it is longer than 253 characters"));
    }
    for label in dns.split('.') {
        crate::dns::check_label(label).map_err(bad)?;
    }
    Ok(dns)
}

/// A system host name like "localhost" or "(none)" adds nothing to the certificate.
fn host_is_useful(name: &str) -> bool {
    !matches!(name, "localhost.local" | "localhost" | "localhost.localdomain")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn normalize_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("keksbox.local", Some("keksbox.local")),
            ("KeksBox.Local.", Some("keksbox.local")),
            ("10.0.0.1", Some("10.0.0.1")),
            ("[::1]", Some("::1")),
            ("fd00:0:0::1", Some("fd00::1")),
            ("", None),
            ("a..b", None),
            ("bad_name.local", None),
            ("-x.local", None),
            ("room 2.local", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).ok().as_deref(), *want, "{input:?}");
        }
    }

    #[test]
    fn required_names_cover_mdns_host_system_host_localhost_and_ips() {
        let ips = [IpAddr::from([10, 77, 0, 1]), IpAddr::from([127, 0, 0, 1])];
        let names = CertNames::required("keksbox.local", Some("pi4\n"), &ips, &["room2.lan".into()]).unwrap();
        let all: Vec<&str> = names.iter().collect();
        assert_eq!(
            all,
            [
                "10.77.0.1",
                "127.0.0.1",
                "keksbox.local",
                "localhost",
                "pi4.local",
                "room2.lan"
            ]
        );
    }

    #[test]
    fn a_qualified_system_host_name_is_covered_with_and_without_its_domain() {
        let names = CertNames::required("keksbox.local", Some("pi4.example.org"), &[], &[]).unwrap();
        assert!(
            names.contains("pi4.local") && names.contains("pi4.example.org"),
            "{names:?}"
        );
    }

    #[test]
    fn system_host_that_is_not_a_dns_name_is_left_out() {
        let names = CertNames::required("keksbox.local", Some("my_box"), &[], &[]).unwrap();
        assert!(!names.iter().any(|n| n.contains("my_box")));
        let names = CertNames::required("keksbox.local", Some("localhost"), &[], &[]).unwrap();
        assert_eq!(names.iter().collect::<Vec<_>>(), ["keksbox.local", "localhost"]);
    }

    #[test]
    fn bad_extra_name_is_an_error_naming_it() {
        let err = CertNames::required("keksbox.local", None, &[], &["no way".into()]).unwrap_err();
        assert!(err.to_string().contains("\"no way\""), "{err}");
    }

    #[test]
    fn names_file_round_trips_and_coverage_is_a_subset_check() {
        let a = CertNames::required("keksbox.local", None, &[IpAddr::from([10, 0, 0, 1])], &[]).unwrap();
        let parsed = CertNames::parse(&a.render()).unwrap();
        assert_eq!(parsed, a);
        let b = CertNames::required("keksbox.local", None, &[], &[]).unwrap();
        assert!(a.covers(&b));
        assert!(!b.covers(&a));
        assert_eq!(a.missing_from(&b), ["10.0.0.1"]);
    }
}
