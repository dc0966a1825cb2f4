//! A Rust scheduler for the lateness row: what a Rust user would pick instead
//! of sandcron for in-process cron, `tokio-cron-scheduler` with its defaults
//! (in-memory job store, its own tick loop, on this process's multi-threaded
//! runtime). N jobs at `* * * * * *` with no-op bodies; each run records how
//! long after the whole second it is for it started. The crate does not hand
//! a job its scheduled instant, so the instant is the whole second the run
//! started in: a run later than a second would count as early in the next
//! one. The fires column shows whether that can have happened (fewer fires
//! than expected means ticks came late or were lost).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio_cron_scheduler::{Job, JobScheduler};

/// What one run of the peer measured.
pub struct RustPeer {
    /// Lateness of each run in the window, in ms.
    pub samples: Vec<f64>,
    pub fires: u64,
    pub seconds: f64,
}

/// Schedules `jobs` every-second jobs, lets them run 3 s, then records
/// `window` seconds.
pub async fn measure(jobs: usize, window: u64) -> anyhow::Result<RustPeer> {
    let scheduler = JobScheduler::new().await?;
    let samples = Arc::new(Mutex::new(Vec::with_capacity(jobs * window as usize)));
    let recording = Arc::new(AtomicBool::new(false));
    let fires = Arc::new(AtomicU64::new(0));
    for _ in 0..jobs {
        let (samples, recording, fires) = (samples.clone(), recording.clone(), fires.clone());
        let job = Job::new_async("* * * * * *", move |_id, _scheduler| {
            let (samples, recording, fires) = (samples.clone(), recording.clone(), fires.clone());
            Box::pin(async move {
                if recording.load(Ordering::Relaxed) {
                    let late_ms = f64::from(Timestamp::now().subsec_nanosecond()) / 1e6;
                    fires.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut samples) = samples.lock() {
                        samples.push(late_ms);
                    }
                }
            })
        })?;
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    recording.store(true, Ordering::Relaxed);
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(window)).await;
    recording.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let mut scheduler = scheduler;
    scheduler.shutdown().await?;
    let samples = std::mem::take(&mut *samples.lock().map_err(|_| anyhow::anyhow!("a job panicked"))?);
    Ok(RustPeer {
        samples,
        fires: fires.load(Ordering::Relaxed),
        seconds,
    })
}
