//! Prepares the guides in `docs/*.md` for rustdoc, so that `backprop::guide::*` shows them on
//! docs.rs with the same text as the repository. The files are written for GitHub-style Markdown;
//! rustdoc needs four changes, made here into `$OUT_DIR/guide/*.md` (the sources stay as they
//! are):
//!
//! - a code fence without a language becomes `text` (rustdoc would compile it as Rust), and a
//!   `rust` fence becomes `rust,ignore` (the guides show fragments; the crate's doctests and
//!   tests are where code runs);
//! - a link to another guide, `(walkthrough.md#section)`, becomes an intra-doc link,
//!   `(crate::guide::walkthrough#section)`;
//! - a link to a source file, `(../src/layers/mod.rs)`, becomes an intra-doc link to its module,
//!   `(crate::layers)` (a link to a private module fails `cargo doc`, which CI runs);
//! - a picture, `(img/curve.png)` or `(img/map.svg)`, is embedded as a `data:` URL (rustdoc does
//!   not ship files).
//!
//! No dependency: the base64 encoder is the dozen lines below.

use std::fs;
use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=docs");
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("guide");
    fs::create_dir_all(&out).expect("OUT_DIR is writable");
    let docs = Path::new("docs");
    let mut entries: Vec<_> = fs::read_dir(docs).expect("docs/ ships with the crate").flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("a guide is UTF-8");
        fs::write(out.join(path.file_name().expect("a file")), for_rustdoc(&text, docs)).expect("write");
    }
}

/// The four changes described at the top of this file.
fn for_rustdoc(text: &str, docs: &Path) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_fence = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            let indent = &line[..line.len() - trimmed.len()];
            if in_fence {
                out.push_str(line);
            } else if info.trim().is_empty() {
                out.push_str(&format!("{indent}```text"));
            } else if info.trim() == "rust" {
                out.push_str(&format!("{indent}```rust,ignore"));
            } else {
                out.push_str(line);
            }
            in_fence = !in_fence;
        } else if in_fence {
            out.push_str(line);
        } else {
            out.push_str(&rewrite_links(line, docs));
        }
        out.push('\n');
    }
    out
}

/// Rewrites the targets of the Markdown links `](target)` on one line.
fn rewrite_links(line: &str, docs: &Path) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("](") {
        let (before, after) = rest.split_at(start + 2);
        out.push_str(before);
        let Some(end) = after.find(')') else {
            rest = after;
            break;
        };
        out.push_str(&rewrite_target(&after[..end], docs));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn rewrite_target(target: &str, docs: &Path) -> String {
    let (file, fragment) = match target.split_once('#') {
        Some((f, frag)) => (f, format!("#{frag}")),
        None => (target, String::new()),
    };
    if file.is_empty() || file.contains("://") {
        return target.to_string();
    }
    if let Some(guide) = file.strip_suffix(".md").filter(|g| !g.contains('/')) {
        return format!("crate::guide::{guide}{fragment}");
    }
    if let Some(source) = file.strip_prefix("../src/").and_then(|s| s.strip_suffix(".rs")) {
        let module = source.strip_suffix("/mod").unwrap_or(source).replace('/', "::");
        return if module == "lib" { "crate".to_string() } else { format!("crate::{module}{fragment}") };
    }
    if file.starts_with("img/") && (file.ends_with(".png") || file.ends_with(".svg")) {
        let bytes = fs::read(docs.join(file)).expect("a picture the guide shows");
        let kind = if file.ends_with(".svg") { "svg+xml" } else { "png" };
        return format!("data:image/{kind};base64,{}", base64(&bytes));
    }
    target.to_string()
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
