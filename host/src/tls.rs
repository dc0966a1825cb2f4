//! The TLS crypto provider every TLS client in the process uses: rustls with
//! ring (no aws-lc, cmake or OpenSSL in the build). Installed once, before
//! the first client is built; idempotent.

use std::sync::Once;

/// Makes ring the process's default rustls provider (the HTTP clients of
/// HTTP jobs, webhooks, SMTP and the CLI find it there).
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Fails only if another provider was installed first, which then
        // serves just as well.
        let _other_provider = rustls::crypto::ring::default_provider().install_default();
    });
}
