//! The `sandcron` binary: parses the command line, sets up logging and signal
//! handling, and hands over to the library. Only this file installs signal
//! handlers.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use sandcron::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(sandcron::config::log_filter()))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or the journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // `--check-config` validates and exits before anything connects.
    match &cli.command {
        Command::Master(args) if args.cluster.check_config => return check_config(args.load().map(master_summary)),
        Command::Worker(args) if args.cluster.check_config => return check_config(args.load().map(worker_summary)),
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Try(args) = cli.command {
        return runtime.block_on(sandcron::cli::run_try(args));
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev(args).await,
            Command::Master(args) => master(args).await,
            Command::Worker(args) => worker(args).await,
            other => sandcron::cli::run_client(other, cli.client).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status of `--check-config` for a configuration that does not load.
const INVALID_CONFIG: u8 = 2;

/// Prints the summary of a valid configuration (status 0), or the error
/// (status 2).
fn check_config(loaded: anyhow::Result<Vec<(&'static str, String)>>) -> ExitCode {
    match loaded {
        Ok(lines) => {
            println!("configuration is valid");
            for (key, value) in lines {
                println!("{key:<16} {value}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(INVALID_CONFIG)
        }
    }
}

/// What `sandcron master --check-config` prints: no token, password or
/// connection string, only where things are.
fn master_summary(config: sandcron::config::MasterConfig) -> Vec<(&'static str, String)> {
    let mut lines = vec![
        ("role", "master".to_owned()),
        ("listen", config.server.listen.to_string()),
        ("auth tokens", token_summary(&config.server.tokens)),
        (
            "shell jobs",
            if config.allow_shell_jobs { "accepted" } else { "refused" }.to_owned(),
        ),
        ("max module", format!("{} MiB", config.server.max_module_bytes >> 20)),
        ("secrets key", key_summary(config.secrets_key.as_deref())),
        ("quotas", quota_summary(&config.server.quotas)),
        (
            "etcd worst case",
            format!(
                "{} MiB of live data through the API at these quotas (etcd's default quota is 2048 MiB; \
                 history between compactions comes on top)",
                config.etcd_worst_case_bytes >> 20
            ),
        ),
    ];
    lines.extend(store_summary(&config.stores));
    lines
}

fn quota_summary(quotas: &sandcron::config::Quotas) -> String {
    format!(
        "{} modules / {} MiB, {} jobs of {} KiB, {} pending runs per job, {} secrets",
        quotas.max_modules,
        quotas.max_module_total_bytes >> 20,
        quotas.max_jobs,
        quotas.max_job_bytes >> 10,
        quotas.max_pending_runs,
        quotas.max_secrets
    )
}

/// What `sandcron worker --check-config` prints.
fn worker_summary(config: sandcron::config::WorkerRoleConfig) -> Vec<(&'static str, String)> {
    let worker = &config.worker;
    let labels: Vec<String> = worker.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut lines = vec![
        ("role", "worker".to_owned()),
        (
            "id",
            worker
                .id
                .clone()
                .unwrap_or_else(|| "(host name and a random suffix)".to_owned()),
        ),
        ("capacity", worker.capacity.to_string()),
        (
            "labels",
            if labels.is_empty() {
                "(none)".to_owned()
            } else {
                labels.join(", ")
            },
        ),
        ("allow_native", worker.allow_native.to_string()),
        ("lease_ttl_s", config.lease_ttl.as_secs().to_string()),
        ("drain_timeout_s", worker.drain_timeout.as_secs().to_string()),
        ("data dir", config.data_dir.display().to_string()),
        (
            "listen",
            config
                .listen
                .map_or_else(|| "(no probe server)".to_owned(), |addr| addr.to_string()),
        ),
        ("secrets key", key_summary(config.secrets_key.as_deref())),
    ];
    lines.extend(store_summary(&config.stores));
    lines
}

/// The key ids of a secrets key file, never the keys.
fn key_summary(keyring: Option<&sandcron::secret::Keyring>) -> String {
    match keyring {
        None => "none (jobs cannot use secrets)".to_owned(),
        Some(keyring) => format!("keys {} (the first seals)", keyring.ids().join(", ")),
    }
}

fn token_summary(tokens: &[sandcron::auth::Token]) -> String {
    if tokens.is_empty() {
        return "none (every caller is admin)".to_owned();
    }
    let names: Vec<String> = tokens
        .iter()
        .map(|t| format!("{} ({})", t.name, t.role.as_str()))
        .collect();
    format!("{}: {}", tokens.len(), names.join(", "))
}

fn store_summary(stores: &sandcron::config::ClusterStores) -> Vec<(&'static str, String)> {
    let etcd = &stores.etcd;
    let endpoints: Vec<String> = etcd.endpoints.iter().map(|e| without_userinfo(e)).collect();
    let tls = match &etcd.tls {
        Some(tls) if tls.client_cert_pem.is_some() => "on, with a client certificate",
        Some(_) => "on",
        None => "off",
    };
    let etcd_auth = match &etcd.username {
        Some(user) => format!("user {user:?}"),
        None => "none".to_owned(),
    };
    vec![
        ("etcd endpoints", endpoints.join(", ")),
        ("etcd prefix", stores.prefix.clone()),
        ("etcd tls", tls.to_owned()),
        ("etcd auth", etcd_auth),
        ("mongodb hosts", mongo_hosts(&stores.mongo.uri)),
        ("mongodb database", stores.mongo.database.clone()),
    ]
}

/// `scheme://host:port…` with any `user:password@` removed.
fn without_userinfo(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// The hosts of a MongoDB URI, never its credentials or options. Only a
/// URI whose one `@` (if any) ends the authority part shows its hosts: in
/// anything else a password with an unescaped `/`, `?` or `@` could be
/// mistaken for a host.
fn mongo_hosts(uri: &str) -> String {
    let hidden = || "(not shown)".to_owned();
    let Some((_, rest)) = uri.split_once("://") else {
        return hidden();
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let hosts = match (uri.matches('@').count(), authority.rsplit_once('@')) {
        (0, None) => authority,
        (1, Some((_credentials, hosts))) => hosts,
        _ => return hidden(),
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | ',' | ':' | '-' | '_' | '[' | ']');
    if hosts.is_empty() || !hosts.chars().all(plain) {
        return hidden();
    }
    hosts.to_owned()
}

/// Binds the server's address and arms the signal handler.
async fn bind(listen: std::net::SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, CancellationToken)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {listen}: {err}"))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    Ok((listener, shutdown))
}

async fn dev(args: sandcron::config::DevArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let (listener, shutdown) = bind(config.server.listen).await?;
    let address = listener.local_addr()?;
    println!(
        "sandcron dev listening on http://{address} (data in {})",
        config.data_dir.display()
    );
    sandcron::launch::dev(config, listener, shutdown).await
}

async fn master(args: sandcron::config::MasterArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let (listener, shutdown) = bind(config.server.listen).await?;
    let address = listener.local_addr()?;
    let run = sandcron::launch::master(config, listener, shutdown);
    println!("sandcron master listening on http://{address}");
    run.await
}

async fn worker(args: sandcron::config::WorkerArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    sandcron::launch::worker(config, shutdown).await
}

/// Cancels `shutdown` on SIGINT or SIGTERM; a second signal exits at once.
async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        eprintln!("error: cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: draining runs, then flushing logs (signal again to exit at once)");
    shutdown.cancel();
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("second signal: exiting without draining");
    std::process::exit(130);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_in_store_summaries() {
        assert_eq!(
            mongo_hosts("mongodb://db1,db2:27018,db3/?replicaSet=rs0"),
            "db1,db2:27018,db3"
        );
        assert_eq!(
            mongo_hosts("mongodb+srv://u:p%40ss@cluster.example.com/x"),
            "cluster.example.com"
        );
        for uri in [
            "mongodb://u:pa/ss@db1/",
            "mongodb://u:pa?ss@db1/",
            "mongodb://u:p@ss@db1/",
            "mongodb://db1/?tlsCertificateKeyFilePassword=s@cret",
            "not a uri",
        ] {
            let shown = mongo_hosts(uri);
            assert_eq!(shown, "(not shown)", "{uri}");
        }
        assert_eq!(
            without_userinfo("https://u:secret@10.0.0.1:2379"),
            "https://10.0.0.1:2379"
        );
        assert_eq!(without_userinfo("http://10.0.0.1:2379"), "http://10.0.0.1:2379");
    }
}
