//! Turning the label a peer gives a file into a path under the output directory, or
//! refusing it. Labels come from other people's machines: a label must never name a place
//! outside the output directory, a device, or a hidden control sequence for the terminal.

use std::path::{Component, Path, PathBuf};

/// Why a label cannot be used as a file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or only separators.
    #[error("the offered name is empty")]
    Empty,
    /// An absolute path, a `..` component, or a drive prefix.
    #[error("the offered name {0:?} points outside the download directory")]
    Escapes(String),
    /// A name Windows reserves for devices (CON, NUL, COM1...), or `.`.
    #[error("the offered name {0:?} is a device name")]
    Device(String),
    /// Control characters or backslashes.
    #[error("the offered name {0:?} contains control characters or backslashes")]
    Characters(String),
    /// Longer than file systems take.
    #[error("the offered name is too long")]
    TooLong,
}

/// The relative path for `label` (`/` separates directories), checked.
pub fn relative_path(label: &str) -> Result<PathBuf, NameError> {
    if label.len() > 4096 {
        return Err(NameError::TooLong);
    }
    if label.chars().any(|c| c.is_control() || c == '\\') {
        return Err(NameError::Characters(label.escape_debug().to_string()));
    }
    if label.starts_with('/') || label.as_bytes().get(1) == Some(&b':') {
        return Err(NameError::Escapes(label.to_owned()));
    }
    let mut out = PathBuf::new();
    for part in label.split('/').filter(|p| !p.is_empty()) {
        if part == ".." {
            return Err(NameError::Escapes(label.to_owned()));
        }
        if part == "." || is_device(part) {
            return Err(NameError::Device(label.to_owned()));
        }
        if part.len() > 255 {
            return Err(NameError::TooLong);
        }
        out.push(part);
    }
    // Belt and braces: what we built must be plain names only.
    if out.as_os_str().is_empty() {
        return Err(NameError::Empty);
    }
    if !out.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(NameError::Escapes(label.to_owned()));
    }
    Ok(out)
}

fn is_device(part: &str) -> bool {
    let stem = part.split('.').next().unwrap_or(part).trim_end().to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit())
}

/// The `.part` file a download goes to until it is complete.
pub fn part_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    target.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_nested_names() {
        assert_eq!(relative_path("notes.pdf"), Ok(PathBuf::from("notes.pdf")));
        assert_eq!(
            relative_path("photos/2026/a b.jpg"),
            Ok(PathBuf::from("photos/2026/a b.jpg"))
        );
        assert_eq!(relative_path("dir//x"), Ok(PathBuf::from("dir/x")));
        assert_eq!(relative_path("ünïcödé.txt"), Ok(PathBuf::from("ünïcödé.txt")));
        assert_eq!(
            relative_path("con.txt.bak/ok..txt"),
            Err(NameError::Device("con.txt.bak/ok..txt".into()))
        );
        assert_eq!(relative_path("...x"), Ok(PathBuf::from("...x")));
    }

    #[test]
    fn refuses_hostile_names() {
        for (label, want) in [
            ("", NameError::Empty),
            ("/", NameError::Escapes("/".into())),
            ("//", NameError::Escapes("//".into())),
            ("/etc/passwd", NameError::Escapes("/etc/passwd".into())),
            ("../x", NameError::Escapes("../x".into())),
            ("a/../../x", NameError::Escapes("a/../../x".into())),
            ("C:/x", NameError::Escapes("C:/x".into())),
            ("NUL", NameError::Device("NUL".into())),
            ("dir/com1.txt", NameError::Device("dir/com1.txt".into())),
            (".", NameError::Device(".".into())),
        ] {
            assert_eq!(relative_path(label), Err(want), "{label:?}");
        }
        for label in ["a\\..\\b", "evil\u{1b}[2Jname", "new\nline"] {
            assert!(
                matches!(relative_path(label), Err(NameError::Characters(_))),
                "{label:?}"
            );
        }
        assert_eq!(relative_path(&"a".repeat(300)), Err(NameError::TooLong));
    }

    #[test]
    fn part_files() {
        assert_eq!(part_path(Path::new("out/a.txt")), PathBuf::from("out/a.txt.part"));
    }
}
