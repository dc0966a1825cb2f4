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
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev(args).await,
            Command::Master(args) => master(args).await,
            Command::Worker(args) => worker(args).await,
            other => sandcron::cli::run_client(other).await,
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

async fn dev(args: sandcron::config::DevArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", config.server.listen))?;
    let address = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    println!(
        "sandcron dev listening on http://{address} (data in {})",
        config.data_dir.display()
    );
    sandcron::dev::run(config, listener, shutdown).await
}

async fn master(args: sandcron::config::MasterArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", config.server.listen))?;
    let address = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    let run = sandcron::roles::run_master(config, listener, shutdown);
    println!("sandcron master listening on http://{address}");
    run.await
}

async fn worker(args: sandcron::config::WorkerArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    sandcron::roles::run_worker(config, shutdown).await
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
