//! Tests of the WASM executor against the guests in `tests/guests/*.wat`:
//! each hostile guest ends in its own status, kills and timeouts stop runs,
//! runs are isolated, the disk cache round-trips and refuses tampering, and
//! inspection refuses what it must.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::sandbox::SandboxReport;
use super::*;
use crate::exec::{Executor, KillSwitch, RunOutcome, RunOutput, StopReason};
use crate::ids::{JobName, RunId};
use crate::job::{DirMount, JobKind, ShellJob, WasmLimits};
use crate::logstore::sqlite::SqliteLogStore;
use crate::logstore::{LogStore, Sink, SinkConfig};
use crate::run::RunStatus;
use crate::run::{StreamKind, Trigger};

// ---- guests and sources ---------------------------------------------------

fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/guests")
}

/// The binary of `tests/guests/<name>.wat`.
fn guest(name: &str) -> Vec<u8> {
    let path = guests_dir().join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Every guest, by digest, as the coordination store would hold them.
#[derive(Default)]
struct TestSource {
    modules: Mutex<HashMap<ModuleDigest, Vec<u8>>>,
    fetches: AtomicU64,
}

impl TestSource {
    fn add(&self, bytes: Vec<u8>) -> ModuleDigest {
        let digest = ModuleDigest::of(&bytes);
        self.modules.lock().unwrap().insert(digest.clone(), bytes);
        digest
    }
}

#[async_trait]
impl ModuleSource for TestSource {
    async fn module_bytes(&self, digest: &ModuleDigest) -> anyhow::Result<Vec<u8>> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.modules
            .lock()
            .unwrap()
            .get(digest)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no module {digest}"))
    }
}

fn source() -> Arc<TestSource> {
    static SOURCE: OnceLock<Arc<TestSource>> = OnceLock::new();
    Arc::clone(SOURCE.get_or_init(Default::default))
}

/// The engine most tests share (as a worker's runs do), so each guest is
/// compiled once per test binary.
fn shared_engine() -> Arc<WasmEngine> {
    static ENGINE: OnceLock<Arc<WasmEngine>> = OnceLock::new();
    Arc::clone(ENGINE.get_or_init(|| {
        WasmEngine::new(WasmConfig {
            capacity: 16,
            ..WasmConfig::default()
        })
        .unwrap()
    }))
}

fn executor() -> WasmExecutor {
    shared_engine().executor(source())
}

// ---- requests and output --------------------------------------------------

struct Job {
    module: ModuleDigest,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    dirs: Vec<DirMount>,
    limits: WasmLimits,
}

impl Job {
    fn new(guest_name: &str) -> Self {
        Self {
            module: source().add(guest(guest_name)),
            args: Vec::new(),
            env: BTreeMap::new(),
            dirs: Vec::new(),
            limits: WasmLimits {
                fuel: 10_000_000_000,
                memory_mb: 64,
                timeout_s: 60,
                output_kb: 64,
            },
        }
    }

    fn request(&self) -> ExecRequest {
        ExecRequest {
            job: JobName::new("test-job").unwrap(),
            run_id: RunId::generate(),
            tick: jiff::Timestamp::UNIX_EPOCH,
            trigger: Trigger::Manual,
            attempt: 2,
            fence: 41,
            kind: JobKind::Wasm(WasmJob {
                args: self.args.clone().into(),
                env: self.env.clone().into(),
                dirs: self.dirs.clone().into(),
                limits: self.limits.clone(),
                ..WasmJob::new(self.module.clone())
            }),
            parent: None,
            shard: None,
            report_to: None,
            secrets: Default::default(),
        }
    }
}

/// Output captured through a real sink into an in-memory SQLite log store.
struct Capture {
    store: Arc<SqliteLogStore>,
    sink: Sink,
}

impl Capture {
    fn new() -> Self {
        let store = SqliteLogStore::in_memory().unwrap();
        let config = SinkConfig {
            flush_interval: Duration::from_millis(5),
            ..SinkConfig::default()
        };
        let (sink, task) = Sink::new(Arc::clone(&store) as Arc<dyn LogStore>, config);
        tokio::spawn(task.run());
        Self { store, sink }
    }

    fn output(&self, run_id: RunId, limit: u64) -> RunOutput {
        RunOutput::new(run_id, Arc::new(self.sink.clone()), limit)
    }

    /// Stdout and stderr of `run_id` stored so far.
    async fn text(&self, run_id: RunId) -> (String, String) {
        self.sink.flush().await;
        let chunks = self.store.output(run_id, None, 100_000).await.unwrap();
        let mut out = (String::new(), String::new());
        for chunk in chunks {
            match chunk.stream {
                StreamKind::Stdout => out.0.push_str(&chunk.data),
                StreamKind::Stderr => out.1.push_str(&chunk.data),
            }
        }
        out
    }
}

struct Ran {
    report: SandboxReport,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn outcome(&self) -> &RunOutcome {
        &self.report.outcome
    }
}

async fn run_on(executor: &WasmExecutor, job: &Job) -> Ran {
    let capture = Capture::new();
    let request = job.request();
    let mut output = capture.output(request.run_id, job.limits.output_kb * 1024);
    let report = executor.run_sandboxed(&request, &mut output, &KillSwitch::new()).await;
    let (stdout, stderr) = capture.text(request.run_id).await;
    Ran { report, stdout, stderr }
}

async fn run(job: &Job) -> Ran {
    run_on(&executor(), job).await
}

/// Waits (polling, with a deadline) until `condition` holds.
async fn eventually(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---- outcomes -------------------------------------------------------------

#[tokio::test]
async fn hello_prints_and_succeeds() {
    let ran = run(&Job::new("hello")).await;
    let outcome = ran.outcome();
    assert_eq!(
        (outcome.status, outcome.exit_code),
        (RunStatus::Succeeded, Some(0)),
        "{outcome:?}"
    );
    assert_eq!(ran.stdout, "hello\n");
    assert_eq!(ran.stderr, "");
    assert!(outcome.fuel_used.unwrap() > 0, "{outcome:?}");
    assert_eq!(outcome.peak_memory, Some(65536), "one page");
    let stats = shared_engine().module_stats(&Job::new("hello").module).unwrap();
    assert_eq!(stats.kind, ModuleKind::Module);
    assert!(stats.runs >= 1);
    assert_eq!(stats.max_peak_memory, 65536);
}

#[tokio::test]
async fn proc_exit_status_becomes_the_exit_code() {
    let ran = run(&Job::new("exit3")).await;
    let outcome = ran.outcome();
    assert_eq!(
        (outcome.status, outcome.exit_code),
        (RunStatus::Failed, Some(3)),
        "{outcome:?}"
    );
    assert_eq!(outcome.error.as_deref(), Some("exited with status 3"));
    assert_eq!(ran.stderr, "bye\n");
}

#[tokio::test]
async fn the_guest_sees_only_its_args_and_env() {
    // SAFETY of the assertion below: the test process itself has these.
    assert!(std::env::var_os("PATH").is_some());
    let mut job = Job::new("env_args");
    job.args = vec!["a".to_owned(), "b c".to_owned()];
    job.env = BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]);
    let ran = run(&job).await;
    assert_eq!(ran.outcome().status, RunStatus::Succeeded, "{:?}", ran.outcome());
    let (args, env) = ran.stdout.split_once("--\n").expect("separator");
    assert_eq!(args, "test-job\na\nb c\n", "argv[0] is the job name");
    let mut env: Vec<&str> = env.lines().collect();
    env.sort_unstable();
    let request = job.request();
    let expected_fence = format!("SANDCRON_FENCE={}", request.fence);
    assert!(env.contains(&"GREETING=hi"), "{env:?}");
    assert!(env.contains(&"SANDCRON_JOB=test-job"), "{env:?}");
    assert!(env.contains(&expected_fence.as_str()), "{env:?}");
    assert!(env.contains(&"SANDCRON_TRIGGER=manual"), "{env:?}");
    assert!(env.contains(&"SANDCRON_ATTEMPT=2"), "{env:?}");
    assert!(env.iter().any(|var| var.starts_with("SANDCRON_RUN_ID=")), "{env:?}");
    assert!(env.iter().any(|var| var.starts_with("SANDCRON_TICK=")), "{env:?}");
    assert_eq!(env.len(), 7, "nothing but the job's env and SANDCRON_*: {env:?}");
    assert!(
        !env.iter()
            .any(|var| var.starts_with("PATH=") || var.starts_with("HOME="))
    );
}

#[tokio::test]
async fn an_endless_loop_runs_out_of_fuel() {
    let mut job = Job::new("loop");
    job.limits.fuel = 5_000_000;
    let ran = run(&job).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.status, RunStatus::OutOfFuel, "{outcome:?}");
    assert_eq!(outcome.fuel_used, Some(5_000_000));
}

#[tokio::test]
async fn an_endless_loop_without_a_fuel_limit_times_out() {
    let mut job = Job::new("loop");
    job.limits.fuel = u64::MAX;
    job.limits.timeout_s = 1;
    let started = Instant::now();
    let ran = run(&job).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.status, RunStatus::TimedOut, "{outcome:?}");
    assert_eq!(outcome.error.as_deref(), Some("timed out after 1 s"));
    assert!(outcome.fuel_used.unwrap() > 0);
    eprintln!("1 s timeout ended the run after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_memory_bomb_ends_out_of_memory() {
    let mut job = Job::new("memory_bomb");
    job.limits.memory_mb = 32;
    let ran = run(&job).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.status, RunStatus::OutOfMemory, "{outcome:?}");
    assert_eq!(
        outcome.error.as_deref(),
        Some("memory limit of 32 MiB reached (wasm trap: wasm `unreachable` instruction executed)")
    );
    let peak = outcome.peak_memory.unwrap();
    assert!(peak <= 32 << 20 && peak > 30 << 20, "peak {peak}");
}

#[tokio::test]
async fn a_job_memory_limit_is_clamped_to_the_worker_cap() {
    let engine = WasmEngine::new(WasmConfig {
        capacity: 1,
        max_memory_mb: 8,
        ..WasmConfig::default()
    })
    .unwrap();
    let mut job = Job::new("memory_bomb");
    job.limits.memory_mb = 1024;
    let ran = run_on(&engine.executor(source()), &job).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.status, RunStatus::OutOfMemory, "{outcome:?}");
    assert!(outcome.peak_memory.unwrap() <= 8 << 20, "{outcome:?}");
}

#[tokio::test]
async fn a_table_bomb_is_bounded() {
    let ran = run(&Job::new("table_bomb")).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.status, RunStatus::Failed, "{outcome:?}");
    assert_eq!(
        outcome.error.as_deref(),
        Some("table limit of 200000 elements reached (wasm trap: wasm `unreachable` instruction executed)")
    );
}

#[tokio::test]
async fn unbounded_recursion_fails_with_a_stack_overflow() {
    let ran = run(&Job::new("recursion")).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.status, RunStatus::Failed, "{outcome:?}");
    let error = outcome.error.as_deref().unwrap();
    assert!(
        error.starts_with("stack overflow (wasm trap: call stack exhausted)"),
        "{error}"
    );
    assert!(error.len() <= 4200, "the backtrace is cut: {} bytes", error.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_flood_is_cut_at_the_limit_with_bounded_memory() {
    let before = peak_rss_bytes();
    let job = Job::new("flood");
    let request = job.request();
    let limit = 1 << 20;
    let mut output = RunOutput::discard(request.run_id, limit);
    let started = Instant::now();
    let report = executor()
        .run_sandboxed(&request, &mut output, &KillSwitch::new())
        .await;
    let took = started.elapsed();
    assert_eq!(report.outcome.status, RunStatus::Succeeded, "{:?}", report.outcome);
    assert!(output.is_truncated());
    assert_eq!(output.bytes_written(), limit);
    // Stdout reaches the output to the end (its result line still counts);
    // stderr past the cut is dropped in the stream, never queued.
    assert_eq!(output.result(), Some(&serde_json::json!(1 << 30)));
    let stderr_bytes = 64 << 20;
    assert_eq!(report.discarded, stderr_bytes, "all of stderr came after the cut");
    assert_eq!(report.forwarded, (1 << 30) + 31);
    let grown = peak_rss_bytes().saturating_sub(before);
    eprintln!(
        "1 GiB flood: {took:?}, {} bytes forwarded, {} dropped, peak RSS grew by {} MiB",
        report.forwarded,
        report.discarded,
        grown >> 20
    );
    assert!(grown < 256 << 20, "peak RSS grew by {grown} bytes");
}

/// The process's peak resident set (VmHWM), in bytes.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

// ---- files ----------------------------------------------------------------

/// A directory with `hello.txt` and a symlink `link` to /etc/passwd.
fn granted_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "granted\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
    dir
}

fn engine_with_grant(dir: &Path) -> Arc<WasmEngine> {
    WasmEngine::new(WasmConfig {
        capacity: 2,
        dirs: BTreeMap::from([("data".to_owned(), DirGrant::open(dir.to_owned()))]),
        ..WasmConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn without_grants_there_is_no_file_system() {
    let ran = run(&Job::new("files")).await;
    let outcome = ran.outcome();
    assert_eq!(
        (outcome.status, outcome.exit_code),
        (RunStatus::Failed, Some(2)),
        "{outcome:?}"
    );
    // Errno 8 (EBADF): there is no descriptor 3 at all.
    assert_eq!(
        ran.stdout,
        "../x: errno 8\n/etc/passwd: errno 8\nlink: errno 8\nhello.txt: errno 8\nnew.txt: errno 8\n"
    );
}

#[tokio::test]
async fn a_granted_directory_is_read_only_and_cannot_be_escaped() {
    let dir = granted_dir();
    let engine = engine_with_grant(dir.path());
    let mut job = Job::new("files");
    job.dirs = vec![DirMount {
        grant: "data".to_owned(),
        guest_path: "/data".to_owned(),
        writable: false,
    }];
    let ran = run_on(&engine.executor(source()), &job).await;
    let outcome = ran.outcome();
    assert_eq!(
        (outcome.status, outcome.exit_code),
        (RunStatus::Failed, Some(2)),
        "{outcome:?}\n{}",
        ran.stdout
    );
    let lines: Vec<&str> = ran.stdout.lines().collect();
    for escape in ["../x: errno", "/etc/passwd: errno", "link: errno"] {
        assert!(
            lines.iter().any(|line| line.starts_with(escape)),
            "{escape}: {}",
            ran.stdout
        );
    }
    assert!(lines.contains(&"hello.txt: opened"), "{}", ran.stdout);
    assert!(ran.stdout.contains("content: granted\n"), "{}", ran.stdout);
    assert!(
        lines.iter().any(|line| line.starts_with("new.txt: errno")),
        "read-only: {}",
        ran.stdout
    );
    assert!(!dir.path().join("new.txt").exists());
}

#[tokio::test]
async fn the_worker_decides_whether_a_grant_is_writable_and_for_which_jobs() {
    let dir = granted_dir();
    let engine = WasmEngine::new(WasmConfig {
        capacity: 2,
        dirs: BTreeMap::from([(
            "data".to_owned(),
            DirGrant {
                path: dir.path().to_owned(),
                writable: false,
                jobs: vec!["test-*".to_owned()],
            },
        )]),
        ..WasmConfig::default()
    })
    .unwrap();
    let mount = |writable| DirMount {
        grant: "data".to_owned(),
        guest_path: "/data".to_owned(),
        writable,
    };
    let mut job = Job::new("files");
    job.dirs = vec![mount(true)];
    let ran = run_on(&engine.executor(source()), &job).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("directory grant \"data\" is read-only on this worker; the job mounts it writable at /data")
    );
    assert!(!dir.path().join("new.txt").exists());
    // Read-only, it mounts (the test job is named test-job).
    job.dirs = vec![mount(false)];
    let ran = run_on(&engine.executor(source()), &job).await;
    assert!(ran.stdout.contains("content: granted\n"), "{}", ran.stdout);

    let grant = DirGrant {
        path: dir.path().to_owned(),
        writable: true,
        jobs: vec!["backup-*".to_owned(), "exact".to_owned()],
    };
    assert!(grant.admits("backup-db") && grant.admits("exact"));
    assert!(!grant.admits("test-job") && !grant.admits("exactly") && !grant.admits("backup"));
    assert!(DirGrant::open(dir.path().to_owned()).admits("anything"));
}

#[tokio::test]
async fn a_writable_grant_allows_creating_files() {
    let dir = granted_dir();
    let engine = engine_with_grant(dir.path());
    let mut job = Job::new("files");
    job.dirs = vec![DirMount {
        grant: "data".to_owned(),
        guest_path: "/data".to_owned(),
        writable: true,
    }];
    let ran = run_on(&engine.executor(source()), &job).await;
    assert_eq!(ran.outcome().exit_code, Some(2), "escapes still fail: {}", ran.stdout);
    assert!(ran.stdout.contains("new.txt: opened\n"), "{}", ran.stdout);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new.txt")).unwrap(),
        "written\n"
    );
}

#[tokio::test]
async fn an_unknown_grant_fails_the_run() {
    let mut job = Job::new("files");
    job.dirs = vec![DirMount {
        grant: "secrets".to_owned(),
        guest_path: "/secrets".to_owned(),
        writable: false,
    }];
    let ran = run(&job).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("directory grant \"secrets\" (for /secrets) is not configured on this worker")
    );
}

// ---- kills and timeouts ---------------------------------------------------

/// Starts `job`, waits until its stdout shows `marker`, pulls the kill switch
/// and returns the outcome with the time from the pull to the end.
async fn kill_after_output(executor: WasmExecutor, job: &Job, marker: &str) -> (Ran, Duration) {
    let capture = Arc::new(Capture::new());
    let request = job.request();
    let run_id = request.run_id;
    let kill = KillSwitch::new();
    let running = {
        let (capture, kill) = (Arc::clone(&capture), kill.clone());
        tokio::spawn(async move {
            let mut output = capture.output(request.run_id, 1 << 20);
            let report = executor.run_sandboxed(&request, &mut output, &kill).await;
            (report, Instant::now())
        })
    };
    eventually(&format!("{marker:?} on stdout"), Duration::from_secs(30), async || {
        capture.text(run_id).await.0.contains(marker)
    })
    .await;
    let pulled = Instant::now();
    kill.pull(StopReason::Killed);
    let (report, ended) = running.await.unwrap();
    let (stdout, stderr) = capture.text(run_id).await;
    (Ran { report, stdout, stderr }, ended.duration_since(pulled))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_stops_a_cpu_bound_guest() {
    let mut job = Job::new("spin");
    job.limits.fuel = u64::MAX;
    let (ran, latency) = kill_after_output(executor(), &job, "spinning").await;
    eprintln!("kill of a CPU-bound guest took {latency:?}");
    assert_eq!(ran.outcome().status, RunStatus::Killed, "{:?}", ran.outcome());
    assert_eq!(ran.outcome().error.as_deref(), Some("killed on request"));
    assert!(ran.outcome().fuel_used.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_stops_a_guest_blocked_in_a_host_call() {
    let (ran, latency) = kill_after_output(executor(), &Job::new("sleep"), "sleeping").await;
    eprintln!("kill during poll_oneoff took {latency:?}");
    assert_eq!(ran.outcome().status, RunStatus::Killed, "{:?}", ran.outcome());
    assert_eq!(ran.stdout, "sleeping\n", "it never woke");
}

#[tokio::test]
async fn a_shutdown_kill_says_so() {
    let job = Job::new("loop");
    let kill = KillSwitch::new();
    kill.pull(StopReason::Shutdown);
    let request = job.request();
    let mut output = RunOutput::discard(request.run_id, 1024);
    let outcome = executor().execute(&request, &mut output, &kill).await;
    assert_eq!(outcome, RunOutcome::stopped(StopReason::Shutdown));
}

#[tokio::test]
async fn a_timeout_ends_a_guest_blocked_in_a_host_call() {
    let mut job = Job::new("sleep");
    job.limits.timeout_s = 1;
    let ran = run(&job).await;
    assert_eq!(ran.outcome().status, RunStatus::TimedOut, "{:?}", ran.outcome());
    assert_eq!(ran.stdout, "sleeping\n");
}

// ---- isolation and concurrency --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_are_isolated() {
    let executor = executor();
    let runs = (0..10).map(|index| {
        let executor = executor.clone();
        tokio::spawn(async move {
            let mut job = Job::new("env_args");
            job.args = vec![format!("run-{index}")];
            job.env = BTreeMap::from([("INDEX".to_owned(), index.to_string())]);
            (index, run_on(&executor, &job).await)
        })
    });
    for run in futures::future::join_all(runs).await {
        let (index, ran) = run.unwrap();
        assert_eq!(ran.outcome().status, RunStatus::Succeeded, "{:?}", ran.outcome());
        assert!(
            ran.stdout.starts_with(&format!("test-job\nrun-{index}\n--\n")),
            "{}",
            ran.stdout
        );
        let index_vars: Vec<&str> = ran.stdout.lines().filter(|line| line.starts_with("INDEX=")).collect();
        assert_eq!(index_vars, [format!("INDEX={index}")], "{}", ran.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_beyond_capacity_wait_for_a_slot() {
    let engine = WasmEngine::new(WasmConfig {
        capacity: 1,
        ..WasmConfig::default()
    })
    .unwrap();
    let executor = engine.executor(source());
    let runs = (0..4).map(|_| {
        let executor = executor.clone();
        tokio::spawn(async move { run_on(&executor, &Job::new("hello")).await })
    });
    for ran in futures::future::join_all(runs).await {
        let ran = ran.unwrap();
        assert_eq!(ran.outcome().status, RunStatus::Succeeded, "{:?}", ran.outcome());
        assert_eq!(ran.stdout, "hello\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_runs_compile_once() {
    let engine = WasmEngine::new(WasmConfig {
        capacity: 4,
        ..WasmConfig::default()
    })
    .unwrap();
    let source = Arc::new(TestSource::default());
    // A module of its own, so no other test has fetched it.
    let bytes = wat::parse_str("(module (func (export \"_start\")) (func (export \"compile-once\")))").unwrap();
    let digest = source.add(bytes);
    let executor = engine.executor(Arc::clone(&source) as Arc<dyn ModuleSource>);
    let runs = (0..4).map(|_| {
        let (executor, digest) = (executor.clone(), digest.clone());
        tokio::spawn(async move {
            let mut job = Job::new("hello");
            job.module = digest;
            run_on(&executor, &job).await
        })
    });
    for ran in futures::future::join_all(runs).await {
        assert_eq!(ran.unwrap().outcome().status, RunStatus::Succeeded);
    }
    assert_eq!(engine.stats().compiled, 1);
    assert_eq!(source.fetches.load(Ordering::Relaxed), 1);
    assert_eq!(engine.module_stats(&digest).unwrap().runs, 4);
}

#[tokio::test]
async fn a_module_importing_a_host_function_cannot_run() {
    let ran = run(&Job::new("host_import")).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.error.as_deref().unwrap();
    assert!(
        error.contains("cannot link") && error.contains("env::host_fn"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unknown_module_fails_the_run() {
    let mut job = Job::new("hello");
    job.module = ModuleDigest::of(b"no such module");
    let ran = run(&job).await;
    assert_eq!(ran.outcome().status, RunStatus::Failed);
    assert!(
        ran.outcome()
            .error
            .as_deref()
            .unwrap()
            .starts_with("cannot fetch module")
    );
}

#[tokio::test]
async fn shell_jobs_are_refused() {
    let mut request = Job::new("hello").request();
    request.kind = JobKind::Shell(ShellJob {
        command: "true".to_owned(),
        env: BTreeMap::new(),
        timeout_s: 1,
        output_kb: 1,
    });
    let mut output = RunOutput::discard(request.run_id, 1024);
    let outcome = executor().execute(&request, &mut output, &KillSwitch::new()).await;
    assert_eq!(outcome.status, RunStatus::Failed);
}

// ---- components -----------------------------------------------------------

#[tokio::test]
async fn a_component_run_result_becomes_the_status() {
    let ok = run(&Job::new("component_ok")).await;
    assert_eq!(
        (ok.outcome().status, ok.outcome().exit_code),
        (RunStatus::Succeeded, Some(0)),
        "{:?}",
        ok.outcome()
    );
    let err = run(&Job::new("component_err")).await;
    assert_eq!(
        (err.outcome().status, err.outcome().exit_code),
        (RunStatus::Failed, Some(1)),
        "{:?}",
        err.outcome()
    );
}

#[tokio::test]
async fn a_component_writes_to_stdout_through_wasi_p2() {
    let ran = run(&Job::new("component_hello")).await;
    assert_eq!(ran.outcome().status, RunStatus::Succeeded, "{:?}", ran.outcome());
    assert_eq!(ran.stdout, "hello from a component\n");
    assert!(ran.outcome().peak_memory.unwrap() >= 65536);
}

#[tokio::test]
async fn a_component_runs_out_of_fuel() {
    let mut job = Job::new("component_loop");
    job.limits.fuel = 1_000_000;
    let ran = run(&job).await;
    assert_eq!(ran.outcome().status, RunStatus::OutOfFuel, "{:?}", ran.outcome());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_stops_a_component() {
    let mut job = Job::new("component_loop");
    job.limits.fuel = u64::MAX;
    let kill = KillSwitch::new();
    let request = job.request();
    // An engine of its own, so the module's run counter is this run's.
    let engine = WasmEngine::new(WasmConfig {
        capacity: 1,
        ..WasmConfig::default()
    })
    .unwrap();
    let executor = engine.executor(source());
    let digest = job.module.clone();
    let switch = kill.clone();
    let killer = tokio::spawn(async move {
        // The module's run counter moves when the run starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while engine.module_stats(&digest).is_none_or(|stats| stats.runs == 0) {
            assert!(Instant::now() < deadline, "the component never started");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        switch.pull(StopReason::Killed);
    });
    let mut output = RunOutput::discard(request.run_id, 1024);
    let outcome = executor.execute(&request, &mut output, &kill).await;
    killer.await.unwrap();
    assert_eq!(outcome.status, RunStatus::Killed, "{outcome:?}");
}

// ---- the disk cache -------------------------------------------------------

#[tokio::test]
async fn the_disk_cache_round_trips_and_refuses_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let engine_at = || {
        WasmEngine::new(WasmConfig {
            capacity: 1,
            cache_dir: Some(dir.path().to_owned()),
            ..WasmConfig::default()
        })
        .unwrap()
    };
    for name in ["hello", "component_ok"] {
        let bytes = guest(name);
        let digest = ModuleDigest::of(&bytes);

        let first = engine_at();
        first.prepare(&digest, bytes.clone()).await.unwrap();
        assert_eq!(
            (first.stats().compiled, first.stats().loaded_from_disk),
            (1, 0),
            "{name}"
        );
        let artifact = first.artifacts.as_ref().unwrap().artifact_path(&digest);
        assert!(artifact.exists(), "{name}");

        // A second engine (a restart) loads the artifact without compiling,
        // and without fetching the bytes.
        let second = engine_at();
        let source = Arc::new(TestSource::default());
        let mut job = Job::new("hello");
        job.module = digest.clone();
        let ran = run_on(&second.executor(Arc::clone(&source) as Arc<dyn ModuleSource>), &job).await;
        assert_eq!(
            ran.outcome().status,
            RunStatus::Succeeded,
            "{name}: {:?}",
            ran.outcome()
        );
        assert_eq!(
            (second.stats().compiled, second.stats().loaded_from_disk),
            (0, 1),
            "{name}"
        );
        assert_eq!(source.fetches.load(Ordering::Relaxed), 0);
        assert_eq!(second.module_stats(&digest).unwrap().loaded_from, LoadedFrom::Disk);

        // A flipped byte in the machine code: refused, recompiled, replaced.
        let mut file = std::fs::read(&artifact).unwrap();
        let last = file.len() - 100;
        file[last] ^= 0x55;
        std::fs::write(&artifact, &file).unwrap();
        let third = engine_at();
        third.prepare(&digest, bytes.clone()).await.unwrap();
        let stats = third.stats();
        assert_eq!(
            (stats.rejected_artifacts, stats.compiled, stats.loaded_from_disk),
            (1, 1, 0),
            "{name}"
        );
        let fourth = engine_at();
        fourth.prepare(&digest, bytes.clone()).await.unwrap();
        assert_eq!(fourth.stats().loaded_from_disk, 1, "{name}: the replacement is trusted");

        // An artifact written under another key (another worker's) is refused.
        let key_path = dir.path().join("artifact.key");
        let other_key: Vec<u8> = std::fs::read(&key_path).unwrap().iter().map(|byte| !byte).collect();
        std::fs::write(&key_path, other_key).unwrap();
        let fifth = engine_at();
        fifth.prepare(&digest, bytes).await.unwrap();
        assert_eq!(
            (fifth.stats().rejected_artifacts, fifth.stats().compiled),
            (1, 1),
            "{name}"
        );
    }
}

#[tokio::test]
async fn prepare_refuses_bytes_that_do_not_match_the_digest() {
    let engine = shared_engine();
    let error = engine
        .prepare(&ModuleDigest::of(b"other"), guest("hello"))
        .await
        .unwrap_err();
    assert!(matches!(error, PrepareError::DigestMismatch(_)), "{error}");
}

// ---- inspection -----------------------------------------------------------

#[test]
fn inspect_accepts_modules_and_commands() {
    let engine = shared_engine();
    let info = engine.inspect(&guest("hello")).unwrap();
    assert_eq!(info.kind, ModuleKind::Module);
    assert_eq!(info.imports, ["wasi_snapshot_preview1::fd_write"]);
    let info = engine.inspect(&guest("loop")).unwrap();
    assert!(info.imports.is_empty());
    let info = engine.inspect(&guest("component_ok")).unwrap();
    assert_eq!(info.kind, ModuleKind::Component);
    let info = engine.inspect(&guest("component_hello")).unwrap();
    assert_eq!(
        info.imports,
        ["wasi:io/error@0.2.0", "wasi:io/streams@0.2.0", "wasi:cli/stdout@0.2.0"]
    );
}

#[test]
fn inspect_refuses_what_cannot_run() {
    let engine = shared_engine();
    assert_eq!(engine.inspect(b"hello world"), Err(ModuleError::NotWasm));
    assert_eq!(engine.inspect(b"\0asm"), Err(ModuleError::NotWasm), "too short");

    let mut version_2 = guest("hello");
    version_2[4] = 2;
    assert_eq!(engine.inspect(&version_2), Err(ModuleError::UnsupportedVersion(2)));
    let mut old_component = guest("component_ok");
    old_component[4] = 0x0a;
    assert_eq!(
        engine.inspect(&old_component),
        Err(ModuleError::UnsupportedVersion(0x1000a))
    );

    // Well-formed text, but the function leaves nothing for its result.
    let invalid = wat::parse_str("(module (func (result i32)))").unwrap();
    assert!(matches!(engine.inspect(&invalid), Err(ModuleError::Invalid(_))));
    let truncated = &guest("hello")[..20];
    assert!(matches!(engine.inspect(truncated), Err(ModuleError::Invalid(_))));

    assert_eq!(
        engine.inspect(&guest("host_import")),
        Err(ModuleError::ForbiddenImports(vec!["env::host_fn".to_owned()]))
    );
    let many = wat::parse_str(
        r#"(module (import "env" "a" (func)) (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
             (import "host" "mem" (memory 1)))"#,
    )
    .unwrap();
    assert_eq!(
        engine.inspect(&many),
        Err(ModuleError::ForbiddenImports(vec![
            "env::a".to_owned(),
            "host::mem".to_owned()
        ]))
    );
    assert_eq!(
        engine.inspect(&guest("component_forbidden_import")),
        Err(ModuleError::ForbiddenImports(vec![
            "evil:host/backdoor@1.0.0".to_owned()
        ]))
    );
    // WASI imports the sandbox does not have fail at upload, not at each tick.
    let unknown = wat::parse_str(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "fd_teleport" (func (param i32)))
             (import "wasi_snapshot_preview1" "proc_exit" (func (param i64)))
             (import "wasi_snapshot_preview1" "memory" (memory 1))
             (func (export "_start")))"#,
    )
    .unwrap();
    assert_eq!(
        engine.inspect(&unknown),
        Err(ModuleError::UnknownImports(vec![
            "wasi_snapshot_preview1::fd_teleport (no such function)".to_owned(),
            "wasi_snapshot_preview1::proc_exit (imported as (i64) -> (); the host's is (i32) -> ())".to_owned(),
            "wasi_snapshot_preview1::memory (no such function)".to_owned(),
        ]))
    );
    let nn = wat::parse_str(
        r#"(component
             (import "wasi:nn/graph@0.2.0" (instance))
             (core module $m (func (export "run") (result i32) i32.const 0))
             (core instance $i (instantiate $m))
             (func $run (result (result)) (canon lift (core func $i "run")))
             (instance $run-instance (export "run" (func $run)))
             (export "wasi:cli/run@0.2.0" (instance $run-instance)))"#,
    )
    .unwrap();
    match engine.inspect(&nn) {
        Err(ModuleError::UnknownImports(reasons)) => {
            assert_eq!(
                reasons,
                ["wasi:nn/graph@0.2.0 (this sandbox provides no wasi:nn interfaces)"]
            )
        }
        other => panic!("{other:?}"),
    }
    match engine.inspect(&guest("component_not_command")) {
        Err(ModuleError::NotACommand(message)) => assert!(message.contains("exports only hello"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn inspect_enforces_the_size_limit() {
    let engine = WasmEngine::new(WasmConfig {
        capacity: 1,
        max_module_bytes: 16,
        ..WasmConfig::default()
    })
    .unwrap();
    let bytes = guest("hello");
    assert_eq!(
        engine.inspect(&bytes),
        Err(ModuleError::TooLarge {
            size: bytes.len() as u64,
            limit: 16
        })
    );
    assert_eq!(engine.max_module_bytes(), 16);
}

#[test]
fn every_guest_is_valid_webassembly() {
    // The hostile guests are valid modules: each is refused or stopped at run
    // time for what it does, not for its shape.
    let engine = shared_engine();
    for entry in std::fs::read_dir(guests_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "wat") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let result = engine.inspect(&guest(&name));
        match name.as_str() {
            "host_import" | "component_forbidden_import" => {
                assert!(matches!(result, Err(ModuleError::ForbiddenImports(_))), "{name}")
            }
            "component_not_command" => assert!(matches!(result, Err(ModuleError::NotACommand(_))), "{name}"),
            _ => assert!(result.is_ok(), "{name}: {result:?}"),
        }
    }
}

// ---- getting modules ready ahead of runs -----------------------------------

#[tokio::test]
async fn a_warmed_module_is_ready_for_the_first_run_and_a_cold_one_says_it_waited() {
    let fresh = || {
        WasmEngine::new(WasmConfig {
            capacity: 2,
            ..WasmConfig::default()
        })
        .unwrap()
    };
    let job = Job::new("hello");

    // Cold: the first run compiles the module and says how long it waited;
    // the second finds it ready.
    let cold = fresh().executor(source());
    let first = run_on(&cold, &job).await;
    assert_eq!(first.outcome().status, RunStatus::Succeeded, "{:?}", first.outcome());
    assert!(first.outcome().module_wait.is_some(), "{:?}", first.outcome());
    let second = run_on(&cold, &job).await;
    assert_eq!(second.outcome().module_wait, None, "{:?}", second.outcome());

    // Warmed: `warm` compiles in the background; the first run then waits
    // for nothing.
    let engine = fresh();
    let warm = engine.executor(source());
    let kind = job.request().kind;
    warm.warm(&kind);
    eventually("the module to be ready", Duration::from_secs(30), async || {
        engine.module_stats(&job.module).is_some()
    })
    .await;
    assert_eq!(engine.stats().compiled, 1);
    let ran = run_on(&warm, &job).await;
    assert_eq!(ran.outcome().status, RunStatus::Succeeded, "{:?}", ran.outcome());
    assert_eq!(ran.outcome().module_wait, None, "{:?}", ran.outcome());
    // Warming what is ready, or a job of another kind, does nothing.
    warm.warm(&kind);
    let shell: crate::job::ShellJob = serde_json::from_value(serde_json::json!({"command": "true"})).unwrap();
    warm.warm(&JobKind::Shell(shell));
    assert_eq!(engine.stats().compiled, 1);
}
