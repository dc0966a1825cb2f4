//! Upload-time inspection of a binary, without compiling it: magic, size,
//! encoding version, validation with exactly the engine's WebAssembly
//! features, the WASI-only import rule and, for components, the command
//! world. One pass of wasmparser over the bytes, so it stays fast for big
//! modules (compilation happens at the first run, or in `prepare`).

use wasmparser::{Encoding, Parser, Payload, TypeRef, ValidPayload, Validator, WasmFeatures};

use super::provided::{Provided, signature};

use crate::module::{Capability, ModuleError, ModuleInfo, ModuleKind};

const MAGIC: &[u8; 4] = b"\0asm";
/// Version field of a core module (version 1, layer 0).
const CORE_VERSION: u32 = 0x0000_0001;
/// Version field of a component in the encoding wasmtime 48 reads (version
/// 0x0d, layer 1).
const COMPONENT_VERSION: u32 = 0x0001_000d;

/// The only import module a core module may use.
pub(super) const WASI_P1: &str = "wasi_snapshot_preview1";
/// Components may import only interfaces of WASI packages.
const WASI_PACKAGE_PREFIX: &str = "wasi:";
/// The export that makes a component a command.
const RUN_INTERFACE: &str = "wasi:cli/run";

/// Checks `bytes` as an accepted job binary whose WASI imports are all in
/// `provided`.
pub(super) fn inspect(
    features: WasmFeatures,
    max_bytes: u64,
    provided: &Provided,
    bytes: &[u8],
) -> Result<ModuleInfo, ModuleError> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(ModuleError::NotWasm);
    }
    let size = bytes.len() as u64;
    if size > max_bytes {
        return Err(ModuleError::TooLarge { size, limit: max_bytes });
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let kind = match version {
        CORE_VERSION => ModuleKind::Module,
        COMPONENT_VERSION => ModuleKind::Component,
        other => return Err(ModuleError::UnsupportedVersion(other)),
    };

    let mut validator = Validator::new_with_features(features);
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    // A core module's function types, and the type of each of its imports
    // (`None`: not a function).
    let mut types: Vec<String> = Vec::new();
    let mut import_types: Vec<Option<String>> = Vec::new();
    // Nested modules and components of a component are parsed inline; only
    // the outermost level's imports and exports face the host.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(invalid)?;
        match validator.payload(&payload).map_err(invalid)? {
            ValidPayload::Func(function, body) => {
                let mut function = function.into_validator(Default::default());
                function.validate(&body).map_err(invalid)?;
            }
            ValidPayload::Ok | ValidPayload::Parser(_) | ValidPayload::End(_) => {}
        }
        match payload {
            Payload::Version { encoding, .. } if depth == 0 => {
                let expected = match kind {
                    ModuleKind::Module => Encoding::Module,
                    ModuleKind::Component => Encoding::Component,
                };
                if encoding != expected {
                    return Err(ModuleError::UnsupportedVersion(version));
                }
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::TypeSection(section) if depth == 0 && kind == ModuleKind::Module => {
                for ty in section.into_iter_err_on_gc_types() {
                    let ty = ty.map_err(invalid)?;
                    types.push(signature(ty.params(), ty.results()));
                }
            }
            Payload::ImportSection(section) if depth == 0 => {
                for import in section.into_imports() {
                    let import = import.map_err(invalid)?;
                    imports.push((import.module.to_owned(), Some(import.name.to_owned())));
                    import_types.push(match import.ty {
                        TypeRef::Func(index) => types.get(index as usize).cloned(),
                        _ => None,
                    });
                }
            }
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    let import = import.map_err(invalid)?;
                    imports.push((import.name.name.to_owned(), None));
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    let export = export.map_err(invalid)?;
                    exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }

    let forbidden: Vec<String> = match kind {
        ModuleKind::Module => imports
            .iter()
            .filter(|(module, _)| module != WASI_P1)
            .map(display_import)
            .collect(),
        ModuleKind::Component => imports
            .iter()
            .filter(|(name, _)| !name.starts_with(WASI_PACKAGE_PREFIX))
            .map(display_import)
            .collect(),
    };
    if !forbidden.is_empty() {
        return Err(ModuleError::ForbiddenImports(forbidden));
    }
    let unknown: Vec<String> = match kind {
        ModuleKind::Module => imports
            .iter()
            .zip(&import_types)
            .filter_map(|((_, name), ty)| provided.check_p1(name.as_deref().unwrap_or_default(), ty.as_deref()))
            .collect(),
        ModuleKind::Component => imports
            .iter()
            .filter_map(|(name, _)| Provided::check_interface(name))
            .collect(),
    };
    if !unknown.is_empty() {
        return Err(ModuleError::UnknownImports(unknown));
    }
    if kind == ModuleKind::Component && !exports.iter().any(|name| is_run_interface(name)) {
        let found = if exports.is_empty() {
            "it exports nothing".to_owned()
        } else {
            format!("it exports only {}", exports.join(", "))
        };
        return Err(ModuleError::NotACommand(format!(
            "a job component must export {RUN_INTERFACE} (the wasi:cli/command world); {found}"
        )));
    }
    let imports: Vec<String> = imports.iter().map(display_import).collect();
    let capabilities = match kind {
        ModuleKind::Module => Vec::new(),
        ModuleKind::Component => Capability::of_imports(&imports),
    };
    Ok(ModuleInfo {
        kind,
        imports,
        capabilities,
    })
}

/// `wasi:cli/run` with any 0.2 version (what wasmtime-wasi 48 links), or
/// unversioned.
fn is_run_interface(name: &str) -> bool {
    match name.strip_prefix(RUN_INTERFACE) {
        Some("") => true,
        Some(version) => version.starts_with("@0.2."),
        None => false,
    }
}

fn display_import((module, name): &(String, Option<String>)) -> String {
    match name {
        Some(name) => format!("{module}::{name}"),
        None => module.clone(),
    }
}

fn invalid(error: wasmparser::BinaryReaderError) -> ModuleError {
    ModuleError::Invalid(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_interface_versions() {
        assert!(is_run_interface("wasi:cli/run@0.2.0"));
        assert!(is_run_interface("wasi:cli/run@0.2.6"));
        assert!(is_run_interface("wasi:cli/run"));
        assert!(!is_run_interface("wasi:cli/run@0.3.0"));
        assert!(!is_run_interface("wasi:cli/runner@0.2.0"));
        assert!(!is_run_interface("wasi:http/incoming-handler@0.2.0"));
    }
}
