//! Tidy checks over the `sandcron` crate's own source, in the manner of
//! rust-analyzer's `xtask/src/tidy.rs`: the layering that ARCHITECTURE.md
//! states is read off the `crate::`/`super::` paths of every file and checked
//! against one table, so a forbidden edge fails a test instead of waiting for
//! a reviewer. Also: every file says what it owns, and no file grows past
//! the size a reader can hold unless its header says why.
//!
//! The checks read text; they do not compile anything. Test code (`tests.rs`
//! files, `tests/` folders, `#[cfg(test)]` modules) is exempt from the layers.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which rooms (top-level modules of the crate) each room may use. A room
/// missing from the table may use nothing; `lib.rs` is exempt. Read it
/// bottom-up: the model first, then pure logic, stores and executors, then
/// the parts that wire them together.
const LAYERS: &[(&str, &[&str])] = &[
    // Foundations: no I/O of their own, used by everyone.
    ("ids", &[]),
    ("sync", &[]),
    ("crypto", &[]),
    ("tls", &[]),
    ("heap", &[]),
    ("compact", &[]),
    ("auth", &[]),
    ("cronexpr", &[]),
    ("secret", &["ids", "crypto"]),
    // The model: what is stored and exchanged.
    ("module", &["ids"]),
    ("job", &["ids", "cronexpr", "auth", "run", "secret"]),
    ("run", &["ids", "job"]),
    ("kvstate", &[]),
    ("audit", &["ids", "auth"]),
    // Pure logic over the model: no I/O, no clock.
    ("placement", &["ids", "job", "auth"]),
    ("schedule", &["ids", "job", "cronexpr", "run"]),
    ("check", &["ids", "job", "run", "cronexpr"]),
    // Stores: the contracts and their implementations. Neither knows the
    // other, the configuration, or the executors.
    (
        "coord",
        &[
            "ids",
            "job",
            "run",
            "module",
            "auth",
            "placement",
            "schedule",
            "crypto",
            "tls",
            "secret",
            "kvstate",
            "audit",
        ],
    ),
    ("logstore", &["ids", "job", "run", "audit", "auth"]),
    // Executors: never a store.
    (
        "exec",
        &["ids", "job", "run", "module", "crypto", "tls", "secret", "kvstate"],
    ),
    ("alert", &["ids", "job", "run", "crypto", "tls"]),
    ("metrics", &["ids", "job", "run", "alert", "logstore", "heap"]),
    // Configuration turns files, flags and environment into the settings of
    // every part below.
    (
        "config",
        &[
            "ids",
            "job",
            "run",
            "auth",
            "cronexpr",
            "module",
            "coord",
            "logstore",
            "exec",
            "alert",
            "placement",
            "tls",
            "secret",
            "kvstate",
        ],
    ),
    // The parts that wire the layers: worker (never the API), API (never the
    // executors or the worker), then the roles and the command line.
    (
        "worker",
        &[
            "ids",
            "job",
            "run",
            "module",
            "auth",
            "cronexpr",
            "placement",
            "schedule",
            "coord",
            "logstore",
            "exec",
            "alert",
            "metrics",
            "config",
            "crypto",
            "secret",
            "kvstate",
            "heap",
        ],
    ),
    (
        "api",
        &[
            "ids",
            "job",
            "run",
            "module",
            "auth",
            "cronexpr",
            "placement",
            "schedule",
            "check",
            "coord",
            "logstore",
            "metrics",
            "config",
            "crypto",
            "secret",
            "kvstate",
            "audit",
        ],
    ),
    ("launch", &["*"]),
    // What tests share (the conformance suites, sample records, stand-in
    // stores): the model and the store contracts, nothing that runs jobs.
    (
        "testkit",
        &[
            "ids",
            "job",
            "run",
            "module",
            "auth",
            "placement",
            "coord",
            "logstore",
            "kvstate",
            "audit",
        ],
    ),
    ("cli", &["*"]),
];

/// Rooms every room may use: utilities with no sandcron concept in them.
const EVERYONE: &[&str] = &["sync", "compact"];

/// Rooms that must stay free of I/O and clocks: these paths may not appear
/// in their (non-test) code at all.
const PURE_ROOMS: &[&str] = &["cronexpr", "schedule", "placement", "check"];
const IO_PATHS: &[&str] = &[
    "tokio::net",
    "tokio::fs",
    "tokio::io",
    "tokio::process",
    "tokio::time",
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "Timestamp::now",
    "Zoned::now",
    "SystemTime::now",
    "Instant::now",
];

/// Above this many lines a file needs a reason in its header (a `//!` line
/// containing "Long file:").
const MAX_LINES: usize = 600;

#[test]
fn layers_are_respected() {
    let table: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut violations = Vec::new();
    for file in source_files() {
        let Some(room) = room_of(&file.module) else { continue };
        if file.is_test {
            continue;
        }
        let allowed = table.get(room.as_str()).copied().unwrap_or(&[]);
        for (target, line) in file.edges() {
            if target == room
                || allowed.contains(&"*")
                || allowed.contains(&target.as_str())
                || EVERYONE.contains(&target.as_str())
            {
                continue;
            }
            violations.push(format!(
                "{}:{line}: `{room}` may not use `crate::{target}`",
                file.display
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "forbidden edges (the table is LAYERS in host/tests/tidy.rs; ARCHITECTURE.md says why):\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_room_is_in_the_table() {
    let table: BTreeSet<&str> = LAYERS.iter().map(|(room, _)| *room).collect();
    let rooms: BTreeSet<String> = source_files().iter().filter_map(|file| room_of(&file.module)).collect();
    let missing: Vec<&String> = rooms.iter().filter(|room| !table.contains(room.as_str())).collect();
    assert!(missing.is_empty(), "rooms with no row in LAYERS: {missing:?}");
    let stale: Vec<&&str> = table.iter().filter(|room| !rooms.contains(**room)).collect();
    assert!(
        stale.is_empty(),
        "rows in LAYERS for rooms that do not exist: {stale:?}"
    );
}

#[test]
fn pure_rooms_do_no_io() {
    let mut violations = Vec::new();
    for file in source_files() {
        let Some(room) = room_of(&file.module) else { continue };
        if file.is_test || !PURE_ROOMS.contains(&room.as_str()) {
            continue;
        }
        for (number, line) in file.code.lines().enumerate() {
            for path in IO_PATHS {
                if contains_path(line, path) {
                    violations.push(format!("{}:{}: `{room}` uses `{path}`", file.display, number + 1));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "I/O or clocks in pure rooms:\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_file_says_what_it_owns() {
    let missing: Vec<String> = source_files()
        .iter()
        .filter(|file| !file.text.trim_start().starts_with("//!"))
        .map(|file| file.display.clone())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` header:\n{}",
        missing.join("\n")
    );
}

#[test]
fn long_files_say_why() {
    let long: Vec<String> = source_files()
        .iter()
        .filter(|file| !file.is_test && room_of(&file.module).as_deref() != Some("testkit"))
        .filter(|file| file.text.lines().count() > MAX_LINES)
        .filter(|file| !header(&file.text).contains("Long file:"))
        .map(|file| format!("{} ({} lines)", file.display, file.text.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines without a \"Long file:\" reason in their `//!` header; split them along their seams:\n{}",
        long.join("\n")
    );
}

/// One lock-poison policy (`host/src/sync.rs`): std mutexes are locked only
/// through `sync::lock`, never by skipping past a poisoned lock or turning
/// it into an error of the caller's own.
#[test]
fn locks_follow_the_one_poison_policy() {
    let mut violations = Vec::new();
    for file in source_files() {
        if file.is_test || file.module == ["sync"] {
            continue;
        }
        for (number, line) in file.code.lines().enumerate() {
            let std_lock = line.match_indices(".lock()").any(|(at, _)| {
                let before = &line[..at];
                let after = &line[at + ".lock()".len()..];
                !after.trim_start().starts_with(".await")
                    && !["stdout()", "stderr()", "stdin()"]
                        .iter()
                        .any(|io| before.ends_with(io))
            });
            if std_lock || line.contains("PoisonError") {
                violations.push(format!("{}:{}: {}", file.display, number + 1, line.trim()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "lock std mutexes with `crate::sync::lock` (see its header for why):\n{}",
        violations.join("\n")
    );
}

/// The checker itself: it must see the edges of the forms the crate uses.
#[test]
fn the_parser_finds_edges_in_every_form() {
    let text = r##"
//! A file.
use std::sync::Arc;
use crate::alpha::Thing;
use crate::{beta::{One, Two}, gamma, self as _};
use super::sibling;
use super::super::delta::Other;
// use crate::commented::Out;
/* use crate::blocked::Out; */
fn f() -> String {
    let _ = crate::epsilon::call();
    let _ = "crate::quoted::Out";
    let _ = r#"crate::raw::Out"#;
    format!("{}", 'x')
}
#[cfg(test)]
mod tests {
    use crate::tested::Out;
}
"##
    .to_owned();
    let file = SourceFile::parse(
        PathBuf::from("src/zeta/inner.rs"),
        vec!["zeta".into(), "inner".into()],
        text,
    );
    let targets: BTreeSet<String> = file.edges().into_iter().map(|(target, _)| target).collect();
    let expected: BTreeSet<String> = ["alpha", "beta", "gamma", "zeta", "delta", "epsilon"]
        .map(String::from)
        .into();
    assert_eq!(targets, expected);
}

/// One source file of the crate, with comments, strings and test modules
/// blanked out of `code`.
struct SourceFile {
    display: String,
    /// The module path: `src/coord/domain.rs` is `["coord", "domain"]`.
    module: Vec<String>,
    text: String,
    code: String,
    is_test: bool,
}

impl SourceFile {
    fn parse(path: PathBuf, module: Vec<String>, text: String) -> SourceFile {
        let is_test = module.iter().any(|part| part == "tests");
        let code = strip_test_modules(&blank_comments_and_strings(&text));
        SourceFile {
            display: path.display().to_string(),
            module,
            text,
            code,
            is_test,
        }
    }

    /// The rooms this file's code refers to, with the line of each mention.
    /// Line breaks are read as spaces so that a `use crate::{…}` group over
    /// several lines is one path.
    fn edges(&self) -> Vec<(String, usize)> {
        let joined = self.code.replace('\n', " ");
        let mut edges = Vec::new();
        let mut rest = joined.as_str();
        while let Some(at) = find_root(rest) {
            let position = joined.len() - rest.len() + at;
            let line = self.code[..position].matches('\n').count() + 1;
            let (targets, after) = resolve(&rest[at..], &self.module);
            edges.extend(targets.into_iter().map(|target| (target, line)));
            rest = after;
        }
        edges
    }
}

/// The top-level module a file belongs to, or `None` for `lib.rs`/`main.rs`.
fn room_of(module: &[String]) -> Option<String> {
    module.first().cloned()
}

fn source_files() -> Vec<SourceFile> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    collect_rs(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).expect("under src").to_path_buf();
            let mut module: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("readable source");
            SourceFile::parse(Path::new("host/src").join(relative), module, text)
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The `//!` lines at the top of a file.
fn header(text: &str) -> String {
    text.lines()
        .take_while(|line| line.starts_with("//!") || line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `line` mentions `path` as a path (not as part of a longer name).
fn contains_path(line: &str, path: &str) -> bool {
    line.match_indices(path).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + path.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The next `crate::` or `super::` that starts a path (not the tail of an
/// identifier such as `my_crate::`).
fn find_root(text: &str) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = ["crate::", "super::"]
            .iter()
            .filter_map(|root| text[from..].find(root).map(|at| at + from))
            .min()?;
        let before = text[..at].chars().next_back();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return Some(at);
        }
        from = at + 1;
    }
}

/// Resolves the path starting at `text` (`crate::…` or `super::…`) to the
/// rooms it names, and returns the text after it.
fn resolve<'t>(text: &'t str, module: &[String]) -> (Vec<String>, &'t str) {
    let mut base: Vec<String>;
    let mut rest = text;
    if let Some(after) = rest.strip_prefix("crate::") {
        base = Vec::new();
        rest = after;
    } else {
        // `super` from `coord/domain.rs` (module `coord::domain`) is `coord`.
        base = module.to_vec();
        while let Some(after) = rest.strip_prefix("super::") {
            base.pop();
            rest = after;
        }
    }
    let rest = rest.trim_start();
    let mut targets = Vec::new();
    if let Some(group) = rest.strip_prefix('{') {
        let end = matching_brace(group);
        for item in split_top_level(&group[..end]) {
            let first: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '*')
                .collect();
            if !first.is_empty() && first != "self" && first != "*" {
                targets.push(first);
            } else if first == "self" && !base.is_empty() {
                targets.push(base[0].clone());
            }
        }
        let first_of = |name: String| if base.is_empty() { name } else { base[0].clone() };
        let targets = targets.into_iter().map(first_of).collect();
        return (targets, &group[end.min(group.len())..]);
    }
    let ident: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    let target = if let Some(first) = base.first() {
        first.clone()
    } else {
        ident.clone()
    };
    if !target.is_empty() {
        targets.push(target);
    }
    (targets, &rest[ident.len()..])
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0usize;
    for (at, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return at,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// Replaces comments and the contents of string and char literals with
/// spaces, keeping line breaks, so that paths inside them are not edges.
fn blank_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&chars, i) {
            // A raw string: r"…", r#"…"#, r##"…"##.
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str(&" ".repeat(j - i + 1));
            i = j + 1;
            while i < chars.len() {
                if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() {
                if chars[i] == '\\' {
                    out.push(' ');
                    out.push(blank(chars.get(i + 1).copied().unwrap_or(' ')));
                    i += 2;
                } else if chars[i] == '"' {
                    out.push(' ');
                    i += 1;
                    break;
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == '\'' && next == Some('\\') {
            // An escaped char literal: '\n', '\'', '\u{..}'.
            let end = (i + 2..chars.len())
                .find(|&j| chars[j] == '\'')
                .unwrap_or(chars.len() - 1);
            out.push_str(&" ".repeat(end - i + 1));
            i = end + 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Blanks `#[cfg(test)] mod name { … }` blocks (a `mod name;` declaration
/// points at a file that is itself marked as a test).
fn strip_test_modules(code: &str) -> String {
    let mut out = code.to_owned();
    let mut from = 0;
    while let Some(found) = out[from..].find("#[cfg(test)]") {
        let at = from + found;
        let after = &out[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        if let Some(rest) = trimmed.strip_prefix("mod ")
            && let Some(open) = rest.find(['{', ';'])
            && rest.as_bytes()[open] == b'{'
        {
            let block_start = out.len() - rest.len() + open + 1;
            let end = block_start + matching_brace(&out[block_start..]);
            let blanked: String = out[at..=end.min(out.len() - 1)]
                .chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' })
                .collect();
            out.replace_range(at..=end.min(out.len() - 1), &blanked);
        }
        from = at + 1;
    }
    out
}
