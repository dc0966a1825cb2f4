//! `sandcron try FILE.wasm`: a guest author's inner loop. Runs a module or
//! component once, here, in the very sandbox a worker uses — the same
//! upload checks, limits, WASI context, network rules and ledger, and the
//! same classification of how a run ended — streams its output to the
//! terminal, and ends with the summary a run record would hold. The exit
//! status says how the run ended (0 only when it succeeded). A component's
//! `wasi:keyvalue` state is the worker's implementation over an in-memory
//! store: empty at the start, lost at exit.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use async_trait::async_trait;
use jiff::Timestamp;

use crate::exec::egress::EgressPolicy;
use crate::exec::wasm::{DirGrant, ModuleSource, WasmConfig, WasmEngine};
use crate::exec::{ChunkSink, ExecRequest, Executor, KillSwitch, RunOutcome, RunOutput};
use crate::ids::{JobName, ModuleDigest, RunId, SecretName};
use crate::job::{DirMount, JobKind, JobSpec, WasmJob};
use crate::module::ModuleInspector as _;
use crate::run::{EgressOutcome, OutputChunk, RunStatus, StreamKind, Trigger};
use crate::secret::{RunSecrets, SecretValue};

/// `sandcron try` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TryArgs {
    /// The module or component to run (a `.wasm` file).
    pub file: PathBuf,
    /// Take args, env, config, secrets, limits, dirs, egress and network
    /// limits from this job file (TOML or JSON, as `sandcron job apply -f` reads); flags override.
    #[arg(long, value_name = "FILE")]
    pub job: Option<PathBuf>,
    /// An environment variable for the guest (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Grant the directory PATH as NAME and mount it at /NAME (repeatable);
    /// writable unless `:ro` follows. A `--job` file's `dirs` mount grants by
    /// these names.
    #[arg(long = "dir", value_name = "NAME=PATH[:ro]")]
    pub dirs: Vec<String>,
    /// A secret for the guest, read from this shell's environment variable
    /// NAME (so no value is ever on a command line) and given as a job's
    /// secret named NAME: through `wasi:config`, and as an environment
    /// variable with `secrets_as_env` (repeatable). A `--job` file's
    /// `secrets` are read the same way, by the names the job gives them.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// A `wasi:config` value for a component, as a job's `config` (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Where the guest may connect (repeatable), as a job's `egress`.
    #[arg(long = "egress", value_name = "ENTRY")]
    pub egress: Vec<String>,
    /// Fuel units (about one per WebAssembly instruction).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory limit, MiB.
    #[arg(long = "memory-mb")]
    pub memory_mb: Option<u64>,
    /// Wall-time limit, seconds.
    #[arg(long = "timeout")]
    pub timeout_s: Option<u64>,
    /// Output kept, KiB; the rest is cut with a marker.
    #[arg(long = "output-kb")]
    pub output_kb: Option<u64>,
    /// Arguments for the guest (after `--`); argv[0] is the job's name.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Exit statuses for runs that did not end with an exit code of their own,
/// after the conventions of `timeout(1)` and shells.
const TIMED_OUT: u8 = 124;
const SANDBOX_STOPPED: u8 = 125;
const KILLED: u8 = 137;

/// Runs `args` and returns the process's exit status.
pub async fn run(args: TryArgs) -> ExitCode {
    match trial(args).await {
        Ok(outcome) => exit_status(&outcome),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn exit_status(outcome: &RunOutcome) -> ExitCode {
    match outcome.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Failed => match outcome.exit_code {
            Some(code @ 1..=255) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            _ => ExitCode::FAILURE,
        },
        RunStatus::TimedOut => ExitCode::from(TIMED_OUT),
        RunStatus::Killed => ExitCode::from(KILLED),
        _ => ExitCode::from(SANDBOX_STOPPED),
    }
}

async fn trial(args: TryArgs) -> anyhow::Result<RunOutcome> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let (name, mut job, mut secret_names) = match &args.job {
        Some(path) => from_job_file(path)?,
        None => (default_name(&args.file), empty_job(), BTreeMap::new()),
    };
    for alias in &args.secrets {
        let stored = alias.to_ascii_lowercase().replace('_', "-");
        let stored = SecretName::new(&stored).or_else(|_| SecretName::new("local"))?;
        secret_names.insert(alias.clone(), stored);
    }
    for pair in &args.config {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--config {pair:?}: expected KEY=VALUE"))?;
        job.config.insert(key.to_owned(), value.to_owned());
    }
    let mut grants = BTreeMap::new();
    for spec in &args.dirs {
        let (grant, rest) = spec
            .split_once('=')
            .with_context(|| format!("--dir {spec:?}: expected NAME=PATH or NAME=PATH:ro"))?;
        let (path, writable) = match rest.strip_suffix(":ro") {
            Some(path) => (path, false),
            None => (rest, true),
        };
        let path = std::fs::canonicalize(path).with_context(|| format!("--dir {spec:?}: no directory {path}"))?;
        grants.insert(grant.to_owned(), DirGrant::open(path));
        if !job.dirs.iter().any(|mount| mount.grant == grant) {
            job.dirs.push(DirMount {
                grant: grant.to_owned(),
                guest_path: format!("/{grant}"),
                writable,
            });
        }
    }
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair:?}: expected NAME=VALUE"))?;
        job.env.insert(key.to_owned(), value.to_owned());
    }
    job.egress.extend(args.egress.iter().cloned());
    if !args.args.is_empty() {
        job.args = args.args.clone().into();
    }
    let limits = &mut job.limits;
    limits.fuel = args.fuel.unwrap_or(limits.fuel);
    limits.memory_mb = args.memory_mb.unwrap_or(limits.memory_mb);
    limits.timeout_s = args.timeout_s.unwrap_or(limits.timeout_s);
    limits.output_kb = args.output_kb.unwrap_or(limits.output_kb);
    job.module = ModuleDigest::of(&bytes);

    // The checks an upload and a job write would make, with their words.
    let engine = WasmEngine::new(WasmConfig {
        capacity: 1,
        dirs: grants,
        // Your own machine, as in `sandcron dev`.
        egress_policy: EgressPolicy::local_machine(),
        ..WasmConfig::default()
    })?;
    let info = engine
        .inspect(&bytes)
        .map_err(|err| anyhow::anyhow!("{} would be refused at upload: {err}", args.file.display()))?;
    let mut spec = JobSpec::new("@yearly", JobKind::Wasm(job));
    spec.secrets = secret_names.into();
    spec.validate(Timestamp::now())
        .map_err(|err| anyhow::anyhow!("{}: {}", err.field, err.message))?;
    let secrets = local_secrets(&spec)?;
    let JobKind::Wasm(job) = spec.kind else {
        bail!("a wasm job was built");
    };
    if info.kind == crate::module::ModuleKind::Module && !job.egress.is_empty() {
        bail!(
            "{} is a core module (WASI preview 1), which has no network interface; only components can use --egress",
            args.file.display()
        );
    }

    let request = ExecRequest {
        job: JobName::new(&name).with_context(|| format!("{name:?} is not a job name"))?,
        run_id: RunId::generate(),
        tick: Timestamp::now(),
        trigger: Trigger::Manual,
        attempt: 1,
        fence: 0,
        kind: JobKind::Wasm(job.clone()),
        parent: None,
        shard: None,
        report_to: None,
        secrets,
    };
    let compiling = Instant::now();
    engine
        .prepare(&job.module, bytes.clone())
        .await
        .map_err(|err| anyhow::anyhow!("{} does not compile: {err}", args.file.display()))?;
    let compiled = compiling.elapsed();
    let executor = engine
        .executor(Arc::new(OneModule(bytes)))
        .with_state(local_state(&request.job, &job).await?);
    let mut output = RunOutput::new(request.run_id, Arc::new(Terminal), job.limits.output_kb * 1024)
        .masking(request.secrets.masker());
    let kill = KillSwitch::new();
    // Ctrl-C kills the run the way a kill request would.
    let on_interrupt = kill.clone();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.pull(crate::exec::StopReason::Killed);
        }
    });
    let started = Instant::now();
    let outcome = executor.execute(&request, &mut output, &kill).await;
    let took = started.elapsed();
    interrupt.abort();
    summary(
        &info.kind,
        &outcome,
        (compiled, took),
        output.bytes_written(),
        output.is_truncated(),
    );
    Ok(outcome)
}

/// A component's `wasi:keyvalue` state for this one run: the worker's own
/// implementation (fence, quotas, key rules) over an in-memory store, so it
/// starts empty and is lost when the process exits.
async fn local_state(name: &JobName, job: &WasmJob) -> anyhow::Result<Arc<dyn crate::exec::state::StateStore>> {
    let coord = crate::coord::Coordinator::new(crate::coord::embedded::EmbeddedStore::in_memory(), "/try/");
    let now = Timestamp::now();
    let record = crate::job::JobRecord {
        spec: JobSpec::new("@yearly", JobKind::Wasm(job.clone())),
        meta: crate::job::JobMeta {
            created_at: now,
            updated_at: now,
            active_since: now,
            written_by: crate::auth::Role::Operator,
        },
    };
    // State belongs to a stored job; here the job exists only in memory too.
    coord
        .put_job(name, &record, None, false)
        .await
        .context("cannot set up the in-memory key-value state")?;
    Ok(Arc::new(crate::worker::StoredState::new(
        coord,
        crate::kvstate::StateQuota::default(),
    )))
}

/// The module bytes the executor asks for.
struct OneModule(Vec<u8>);

#[async_trait]
impl ModuleSource for OneModule {
    async fn module_bytes(&self, _digest: &ModuleDigest) -> anyhow::Result<Vec<u8>> {
        Ok(self.0.clone())
    }
}

/// Output goes straight to this process's stdout and stderr.
struct Terminal;

#[async_trait]
impl ChunkSink for Terminal {
    async fn chunk(&self, chunk: OutputChunk) {
        let written = match chunk.stream {
            StreamKind::Stdout => std::io::stdout().lock().write_all(chunk.data.as_bytes()),
            StreamKind::Stderr => std::io::stderr().lock().write_all(chunk.data.as_bytes()),
        };
        // A closed terminal ends nothing: the run goes on.
        let _closed = written;
    }
}

fn default_name(file: &std::path::Path) -> String {
    let stem: String = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if JobName::new(&stem).is_ok() {
        stem
    } else {
        "try".to_owned()
    }
}

fn empty_job() -> WasmJob {
    WasmJob::new(ModuleDigest::of(b""))
}

/// The values of `spec`'s secrets, from this process's environment by the
/// names the job gives them: `try` never reads a store.
fn local_secrets(spec: &JobSpec) -> anyhow::Result<RunSecrets> {
    let aliases: Vec<String> = spec.secrets.keys().cloned().collect();
    let found = crate::config::inherited_env(&aliases);
    let mut secrets = RunSecrets::default();
    for (alias, stored) in &spec.secrets {
        let Some(value) = found.get(alias) else {
            bail!(
                "secret {alias} ({stored} in a store): set the environment variable {alias}; \
                 sandcron try takes secrets from its environment"
            );
        };
        secrets
            .values
            .insert(alias.clone(), SecretValue::new(value.clone().into_bytes()));
        secrets.used.push(stored.clone());
    }
    Ok(secrets)
}

/// The name, wasm settings and secrets of a job file; its `module` is
/// ignored (the file given on the command line is what runs).
fn from_job_file(path: &std::path::Path) -> anyhow::Result<(String, WasmJob, BTreeMap<String, SecretName>)> {
    let (name, mut body) = super::read_job_file(path, None)?;
    if let Some(wasm) = body.pointer_mut("/kind/wasm")
        && let Some(object) = wasm.as_object_mut()
    {
        object
            .entry("module")
            .or_insert_with(|| serde_json::Value::String(ModuleDigest::of(b"").to_string()));
    }
    let spec: JobSpec =
        serde_json::from_value(body).with_context(|| format!("{} is not a valid job", path.display()))?;
    match spec.kind {
        JobKind::Wasm(job) => Ok((name, job, spec.secrets.into_inner())),
        _ => bail!("{} is not a wasm job", path.display()),
    }
}

/// What a run record would say, on stderr.
fn summary(
    kind: &crate::module::ModuleKind,
    outcome: &RunOutcome,
    (compiled, took): (std::time::Duration, std::time::Duration),
    bytes: u64,
    cut: bool,
) {
    let mut lines = vec![format!("status       {}", outcome.status)];
    if let Some(code) = outcome.exit_code {
        lines.push(format!("exit code    {code}"));
    }
    if let Some(error) = &outcome.error {
        lines.push(format!("error        {error}"));
    }
    lines.push(format!("kind         {}", kind.as_str()));
    lines.push(format!(
        "compiled in  {:.1} ms (a worker does this once per module)",
        compiled.as_secs_f64() * 1e3
    ));
    lines.push(format!("duration     {:.1} ms", took.as_secs_f64() * 1e3));
    if let Some(fuel) = outcome.fuel_used {
        lines.push(format!("fuel used    {fuel}"));
    }
    if let Some(memory) = outcome.peak_memory {
        lines.push(format!("peak memory  {} KiB", memory / 1024));
    }
    lines.push(format!(
        "output       {bytes} bytes{}",
        if cut { " (cut at the limit)" } else { "" }
    ));
    if let Some(ledger) = &outcome.egress {
        let totals = &ledger.totals;
        lines.push(format!(
            "egress       {} calls, {} refused, {} failed, {} bytes out, {} bytes in",
            totals.calls, totals.refused, totals.failed, totals.bytes_out, totals.bytes_in
        ));
        for entry in &ledger.entries {
            let what = match (entry.outcome, entry.status, &entry.error) {
                (EgressOutcome::Ok, Some(status), _) => status.to_string(),
                (outcome, _, Some(error)) => format!("{} ({error})", outcome.as_str()),
                (outcome, _, None) => outcome.as_str().to_owned(),
            };
            lines.push(format!(
                "  {} {}{}{} → {what}",
                entry.method.as_deref().unwrap_or(match entry.kind {
                    crate::run::EgressKind::Tcp => "TCP",
                    crate::run::EgressKind::Lookup => "LOOKUP",
                    crate::run::EgressKind::Http => "HTTP",
                }),
                entry.target,
                entry.path.as_deref().unwrap_or(""),
                entry.address.as_deref().map(|a| format!(" [{a}]")).unwrap_or_default(),
            ));
        }
    }
    let mut err = std::io::stderr().lock();
    let _closed = writeln!(err, "\n---- sandcron try ----\n{}", lines.join("\n"));
}
