//! The web client's files: embedded at build time from `web/dist`, or read from a directory
//! at run time (`server.web_dir`, for development).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Component, Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/embedded_assets.rs"));

/// One file ready to serve.
#[derive(Debug, Clone)]
pub struct Asset {
    pub body: Cow<'static, [u8]>,
    pub content_type: &'static str,
    /// A strong validator for conditional requests.
    pub etag: String,
}

/// Where the files come from.
#[derive(Debug)]
pub enum Assets {
    Embedded(HashMap<&'static str, Asset>),
    Dir(PathBuf),
}

impl Assets {
    /// The embedded files, or `dir` when given.
    pub fn new(dir: Option<PathBuf>) -> Self {
        match dir {
            Some(dir) => Assets::Dir(dir),
            None => Assets::Embedded(
                EMBEDDED
                    .iter()
                    .map(|&(path, body)| (path, asset(path, Cow::Borrowed(body))))
                    .collect(),
            ),
        }
    }

    /// Whether a web client is there at all.
    pub fn is_built(&self) -> bool {
        match self {
            Assets::Embedded(files) => files.contains_key("index.html"),
            Assets::Dir(dir) => dir.join("index.html").is_file(),
        }
    }

    /// The file at `path` (relative, `/`-separated), if any. Paths that try to leave the
    /// directory or name hidden files find nothing.
    pub fn get(&self, path: &str) -> Option<Asset> {
        if !is_safe(path) {
            return None;
        }
        match self {
            Assets::Embedded(files) => files.get(path).cloned(),
            Assets::Dir(dir) => {
                let file = dir.join(path);
                let body = std::fs::read(&file).ok()?;
                Some(asset(path, Cow::Owned(body)))
            }
        }
    }
}

fn is_safe(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(name) if !name.to_string_lossy().starts_with('.')))
}

fn asset(path: &str, body: Cow<'static, [u8]>) -> Asset {
    let mut hasher = std::hash::DefaultHasher::new();
    body.hash(&mut hasher);
    Asset {
        content_type: content_type(path),
        etag: format!("\"{:016x}\"", hasher.finish()),
        body,
    }
}

/// The media type for a file name.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "map" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_find_nothing() {
        let dir = std::env::temp_dir();
        let assets = Assets::Dir(dir);
        for p in ["../etc/passwd", "/etc/passwd", "a/../../x", ".git/config", "", "a/./b"] {
            assert!(!is_safe(p) || assets.get(p).is_none(), "{p}");
        }
        assert!(!is_safe("../x") && !is_safe(".hidden") && !is_safe("/abs"));
        assert!(is_safe("assets/app.js"));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a/b.wasm"), "application/wasm");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
