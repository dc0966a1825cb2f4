//! Job binaries as the rest of sandcron sees them: their kind (core module
//! or component), what upload-time inspection learned, why a binary is
//! refused, and the [`ModuleInspector`] contract. The WASM executor
//! implements the inspector; the API and the stores use these types without
//! depending on the executor or wasmtime.

/// Whether a WebAssembly binary is a core module (WASI preview 1) or a
/// component (WASI preview 2, the `wasi:cli/command` world).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    Module,
    Component,
}

impl ModuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Module => "module",
            ModuleKind::Component => "component",
        }
    }
}

/// What upload-time inspection learned about a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub kind: ModuleKind,
    /// Every import, as `module::name` (core) or the interface name (component).
    pub imports: Vec<String>,
    /// The network interfaces it imports (components only: core modules
    /// have none).
    pub capabilities: Vec<Capability>,
}

/// A network interface a component imports; a job running it reaches only
/// what its `egress` lists, through the host.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// `wasi:http/outgoing-handler`: outbound HTTP requests.
    Http,
    /// `wasi:sockets/tcp` and friends: TCP connections.
    Sockets,
}

impl Capability {
    /// The capabilities behind a component's imports (interface names with
    /// or without a version).
    pub fn of_imports<S: AsRef<str>>(imports: &[S]) -> Vec<Capability> {
        let mut found = Vec::new();
        for import in imports {
            let import = import.as_ref();
            let capability = if import.starts_with("wasi:http/outgoing-handler") {
                Capability::Http
            } else if import.starts_with("wasi:sockets/tcp") || import.starts_with("wasi:sockets/ip-name-lookup") {
                Capability::Sockets
            } else {
                continue;
            };
            if !found.contains(&capability) {
                found.push(capability);
            }
        }
        found.sort();
        found
    }
}

/// Why a binary was refused at upload. Each maps to a 4xx with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("not a WebAssembly binary (bad magic number)")]
    NotWasm,
    #[error("module is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("unsupported WebAssembly binary version {0:#x}")]
    UnsupportedVersion(u32),
    #[error("invalid WebAssembly: {0}")]
    Invalid(String),
    #[error("imports other than WASI are not allowed: {}", .0.join(", "))]
    ForbiddenImports(Vec<String>),
    /// WASI imports this sandbox does not provide (an unknown function or
    /// interface, or a function of another type), each with the reason.
    #[error("imports this sandbox does not provide: {}", .0.join("; "))]
    UnknownImports(Vec<String>),
    #[error("component is not a command: {0}")]
    NotACommand(String),
}

/// Checks uploaded binaries. Implemented by the WASM executor's engine, so
/// the API can validate uploads without depending on wasmtime.
pub trait ModuleInspector: Send + Sync + 'static {
    /// Validates `bytes` as an accepted job binary: magic, version, size
    /// limit, wasmtime validation, WASI-only imports, command world.
    fn inspect(&self, bytes: &[u8]) -> Result<ModuleInfo, ModuleError>;

    /// The largest binary accepted, in bytes.
    fn max_module_bytes(&self) -> u64;
}
