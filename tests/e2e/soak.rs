//! The 3-minute chaos soak (see `sandcron_tests::soak`): faults at random
//! while a few hundred jobs run; the run-history checker must find nothing.

use std::time::Duration;

use sandcron_tests::soak::{self, SoakConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_minute_chaos_soak_breaks_no_guarantee() {
    let seed = std::env::var("SANDCRON_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| jiff::Timestamp::now().as_second() as u64);
    let report = soak::run(SoakConfig {
        bin: crate::BIN.to_owned(),
        duration: Duration::from_secs(180),
        jobs: 200,
        seed,
        // Reading every run's output back through the test MongoDB-wire
        // server takes minutes; `just soak` reads all of it.
        output_sample: Some(500),
    })
    .await;
    eprintln!("{}", report.table());
    let faults: usize = report.faults.values().sum();
    assert!(faults >= 5, "the fault driver injected faults: {:?}", report.faults);
    assert!(
        report.check["executed"].as_u64().unwrap_or(0) > 1000,
        "the cluster ran jobs: {}",
        report.check
    );
    assert_eq!(
        (report.check_status, report.violation_count()),
        (0, 0),
        "seed {seed} (replay with SANDCRON_SOAK_SEED); faults:\n{}\nreport: {}",
        report.timeline.join("\n"),
        serde_json::to_string_pretty(&report.check).unwrap_or_default()
    );
}
