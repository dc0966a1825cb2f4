//! What the sandbox provides, as an upload sees it: the WASI preview 1
//! functions of the core linker with their types (read off the linker once,
//! when the engine starts), and the interfaces the component linker
//! defines. An upload whose WASI imports are not all here is refused then,
//! rather than failing to link at every tick.

use std::collections::BTreeMap;

use wasmtime::{Extern, Store};
use wasmtime_wasi::WasiCtxBuilder;

use super::limits::RunLimiter;
use super::sandbox::CoreState;

/// The interfaces a component may import, by package, and which versions:
/// every WASI 0.2 release for the `wasmtime-wasi` families (the linker
/// matches any 0.2 patch), the exact draft of `wasi:config` and
/// `wasi:keyvalue` the host implements.
const INTERFACES: &[(&str, &[&str], Versions)] = &[
    (
        "wasi:cli",
        &[
            "environment",
            "exit",
            "stdin",
            "stdout",
            "stderr",
            "terminal-input",
            "terminal-output",
            "terminal-stdin",
            "terminal-stdout",
            "terminal-stderr",
        ],
        Versions::Wasi02,
    ),
    ("wasi:clocks", &["monotonic-clock", "wall-clock"], Versions::Wasi02),
    ("wasi:filesystem", &["types", "preopens"], Versions::Wasi02),
    ("wasi:io", &["error", "poll", "streams"], Versions::Wasi02),
    (
        "wasi:random",
        &["random", "insecure", "insecure-seed"],
        Versions::Wasi02,
    ),
    (
        "wasi:sockets",
        &[
            "network",
            "instance-network",
            "udp",
            "udp-create-socket",
            "tcp",
            "tcp-create-socket",
            "ip-name-lookup",
        ],
        Versions::Wasi02,
    ),
    ("wasi:http", &["types", "outgoing-handler"], Versions::Wasi02),
    ("wasi:config", &["store"], Versions::Exactly("0.2.0-rc.1")),
    (
        "wasi:keyvalue",
        &["store", "atomics", "batch"],
        Versions::Exactly("0.2.0-draft"),
    ),
];

#[derive(Debug, Clone, Copy)]
enum Versions {
    /// `0.2.x`, or no version.
    Wasi02,
    Exactly(&'static str),
}

/// The provided WASI preview 1 functions, by name, as `(params) -> (results)`.
#[derive(Debug, Clone, Default)]
pub(super) struct Provided {
    p1: BTreeMap<String, String>,
}

impl Provided {
    /// Reads the functions `linker` defines for `wasi_snapshot_preview1`.
    pub(super) fn of(engine: &wasmtime::Engine, linker: &wasmtime::Linker<CoreState>) -> Self {
        let state = CoreState {
            wasi: WasiCtxBuilder::new().build_p1(),
            limiter: RunLimiter::new(0),
        };
        let mut store = Store::new(engine, state);
        let mut p1 = BTreeMap::new();
        let defined: Vec<(String, String, Extern)> = linker
            .iter(&mut store)
            .map(|(module, name, item)| (module.to_owned(), name.to_owned(), item))
            .collect();
        for (module, name, item) in defined {
            if module == super::inspect::WASI_P1
                && let Extern::Func(func) = item
            {
                let ty = func.ty(&store);
                p1.insert(name, signature(ty.params(), ty.results()));
            }
        }
        Self { p1 }
    }

    /// Why the core import `name` of type `wanted` cannot be linked, if it cannot.
    pub(super) fn check_p1(&self, name: &str, wanted: Option<&str>) -> Option<String> {
        match (self.p1.get(name), wanted) {
            (None, _) => Some(format!("wasi_snapshot_preview1::{name} (no such function)")),
            (Some(_), None) => Some(format!("wasi_snapshot_preview1::{name} (not a function here)")),
            (Some(provided), Some(wanted)) if provided != wanted => Some(format!(
                "wasi_snapshot_preview1::{name} (imported as {wanted}; the host's is {provided})"
            )),
            _ => None,
        }
    }

    /// Why the component import `name` (`wasi:pkg/iface@version`) cannot be
    /// linked, if it cannot.
    pub(super) fn check_interface(name: &str) -> Option<String> {
        let (path, version) = match name.split_once('@') {
            Some((path, version)) => (path, Some(version)),
            None => (name, None),
        };
        let (package, interface) = path.split_once('/')?;
        let Some((_, interfaces, versions)) = INTERFACES.iter().find(|(p, _, _)| *p == package) else {
            return Some(format!("{name} (this sandbox provides no {package} interfaces)"));
        };
        if !interfaces.contains(&interface) {
            return Some(format!("{name} (this sandbox provides no {package}/{interface})"));
        }
        let version_ok = match (versions, version) {
            (Versions::Wasi02, None) => true,
            (Versions::Wasi02, Some(version)) => version.starts_with("0.2."),
            (Versions::Exactly(exact), Some(version)) => version == *exact,
            (Versions::Exactly(_), None) => false,
        };
        (!version_ok).then(|| {
            let provided = match versions {
                Versions::Wasi02 => "0.2.x".to_owned(),
                Versions::Exactly(exact) => (*exact).to_owned(),
            };
            format!("{name} (this sandbox provides {package}/{interface}@{provided})")
        })
    }
}

/// `(i32, i32) -> (i32)`, from either side's value types.
pub(super) fn signature<P: std::fmt::Display, R: std::fmt::Display>(
    params: impl IntoIterator<Item = P>,
    results: impl IntoIterator<Item = R>,
) -> String {
    let join = |items: Vec<String>| items.join(", ");
    format!(
        "({}) -> ({})",
        join(params.into_iter().map(|p| p.to_string()).collect()),
        join(results.into_iter().map(|r| r.to_string()).collect())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_checked_by_package_name_and_version() {
        for good in [
            "wasi:cli/environment@0.2.0",
            "wasi:http/outgoing-handler@0.2.12",
            "wasi:io/streams",
            "wasi:config/store@0.2.0-rc.1",
            "wasi:keyvalue/atomics@0.2.0-draft",
        ] {
            assert_eq!(Provided::check_interface(good), None, "{good}");
        }
        let cases = [
            ("wasi:nn/graph@0.2.0", "provides no wasi:nn interfaces"),
            (
                "wasi:http/incoming-handler@0.2.0",
                "provides no wasi:http/incoming-handler",
            ),
            ("wasi:cli/environment@0.3.0", "provides wasi:cli/environment@0.2.x"),
            (
                "wasi:keyvalue/store@0.2.0-draft2",
                "provides wasi:keyvalue/store@0.2.0-draft",
            ),
            ("wasi:config/store", "provides wasi:config/store@0.2.0-rc.1"),
        ];
        for (name, expected) in cases {
            let reason = Provided::check_interface(name).unwrap_or_default();
            assert!(reason.contains(expected), "{name}: {reason}");
        }
    }
}
