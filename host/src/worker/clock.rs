//! Starting runs on the instant of their tick, not up to 2 ms after it.
//!
//! A run claimed ahead of its tick waits for it. Tokio's timers have a 1 ms
//! wheel and the runtime parks with a timeout rounded up to the next
//! millisecond, so a run waiting on its own timer starts 1–2 ms after its
//! tick, and every run of a burst pays it. Instead, the runs of one tick
//! wait on one [`Gate`], and a dedicated thread signals the instant with
//! the OS's sleep (tens of microseconds late) to one runtime task, which
//! opens the gate and wakes them all. Ticks fall on whole seconds, so a
//! worker has a gate or two pending at a time, however many runs wait on
//! them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use jiff::Timestamp;
use tokio::sync::{Notify, oneshot};

/// Opens once, at its instant; any number of runs wait for it.
#[derive(Debug, Default)]
pub(super) struct Gate {
    open: AtomicBool,
    notify: Notify,
}

impl Gate {
    /// Waits until the gate is open (at once if it is).
    pub(super) async fn opened(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read, so an opening between the two
        // wakes this waiter.
        notified.as_mut().enable();
        if self.open.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    fn open(&self) {
        self.open.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Opens the gate from a runtime task once `signal` comes. The clock
    /// thread signals that one task, which opens the gate on a runtime
    /// thread: a thousand runs woken from outside the runtime each take the
    /// runtime's shared queue and wake a thread (a millisecond for a
    /// thousand, with the runtime's threads half idle); woken from inside,
    /// they go to the local queue, and the other threads steal from it.
    fn open_on(self: Arc<Self>, signal: oneshot::Receiver<()>, at: Instant) {
        tokio::spawn(async move {
            if signal.await.is_err() {
                // The clock thread is gone without a word: never early.
                tokio::time::sleep_until(at.into()).await;
            }
            self.open();
        });
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

/// The gates of the ticks runs are waiting for, and the thread that opens
/// them.
pub(super) struct TickClock {
    gates: HashMap<Timestamp, Arc<Gate>>,
    /// `None` once the thread is gone (it could not be started): runs then
    /// wait on their own timers.
    thread: Option<mpsc::Sender<(Instant, oneshot::Sender<()>)>>,
}

impl TickClock {
    pub(super) fn start() -> TickClock {
        let (tx, rx) = mpsc::channel();
        let started = std::thread::Builder::new()
            .name("sandcron-tick-clock".into())
            .spawn(move || open_gates(&rx));
        if let Err(err) = &started {
            tracing::warn!(%err, "cannot start the tick clock thread; runs start on the runtime's timers (1-2 ms late)");
        }
        TickClock {
            gates: HashMap::new(),
            thread: started.is_ok().then_some(tx),
        }
    }

    /// The gate that opens at `at`, the instant of `tick`; `None` when the
    /// clock thread is gone (the run then waits on its own timer).
    pub(super) fn gate(&mut self, tick: Timestamp, at: Instant) -> Option<Arc<Gate>> {
        if let Some(gate) = self.gates.get(&tick) {
            return Some(gate.clone());
        }
        // A new tick: forget the gates that have opened.
        self.gates.retain(|_, gate| !gate.is_open());
        let gate = Arc::new(Gate::default());
        let (signal, signalled) = oneshot::channel();
        if self.thread.as_ref()?.send((at, signal)).is_err() {
            tracing::warn!("the tick clock thread is gone; runs start on the runtime's timers (1-2 ms late)");
            self.thread = None;
            return None;
        }
        gate.clone().open_on(signalled, at);
        self.gates.insert(tick, gate.clone());
        Some(gate)
    }
}

/// The clock thread: opens each gate at its instant, never before; ends
/// once the worker has dropped its clock and the gates left have opened.
fn open_gates(rx: &mpsc::Receiver<(Instant, oneshot::Sender<()>)>) {
    // By instant; a sequence number keeps two gates at one instant apart.
    let mut pending: BTreeMap<(Instant, u64), oneshot::Sender<()>> = BTreeMap::new();
    let mut seq = 0u64;
    let mut connected = true;
    loop {
        let now = Instant::now();
        while let Some(entry) = pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            entry.remove().send(()).ok();
        }
        let next = pending
            .first_key_value()
            .map(|((at, _), _)| at.saturating_duration_since(now));
        let received = match (next, connected) {
            (None, false) => return,
            (Some(wait), false) => {
                std::thread::sleep(wait);
                continue;
            }
            (Some(wait), true) => rx.recv_timeout(wait),
            (None, true) => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok((at, gate)) => {
                seq += 1;
                pending.insert((at, seq), gate);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => connected = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_gate_opens_at_its_instant_and_not_before() {
        let mut clock = TickClock::start();
        let tick = Timestamp::now();
        let at = Instant::now() + Duration::from_millis(30);
        let gate = clock.gate(tick, at).expect("the clock thread runs");
        // The runs of one tick share its gate.
        assert!(Arc::ptr_eq(&gate, &clock.gate(tick, at).expect("gate")));
        gate.opened().await;
        assert!(Instant::now() >= at, "opened before its instant");
        // A waiter that comes after the opening does not wait.
        tokio::time::timeout(Duration::from_secs(5), gate.opened())
            .await
            .expect("an open gate lets waiters through at once");
    }

    #[tokio::test]
    async fn gates_open_in_the_order_of_their_instants() {
        let mut clock = TickClock::start();
        let now = Instant::now();
        let base = Timestamp::now();
        let later_at = now + Duration::from_millis(1020);
        let later = clock
            .gate(base + jiff::SignedDuration::from_secs(2), later_at)
            .expect("gate");
        let sooner = clock
            .gate(
                base + jiff::SignedDuration::from_secs(1),
                now + Duration::from_millis(20),
            )
            .expect("gate");
        sooner.opened().await;
        assert!(!later.is_open(), "the later gate opened with the sooner one");
        later.opened().await;
        assert!(Instant::now() >= later_at, "opened before its instant");
        // Opened gates are forgotten when the next tick's gate is made.
        clock
            .gate(base + jiff::SignedDuration::from_secs(3), Instant::now())
            .expect("gate");
        assert_eq!(clock.gates.len(), 1);
    }

    #[tokio::test]
    async fn a_gate_still_opens_at_its_instant_after_the_clock_is_dropped() {
        let mut clock = TickClock::start();
        let at = Instant::now() + Duration::from_millis(30);
        let gate = clock.gate(Timestamp::now(), at).expect("gate");
        drop(clock);
        tokio::time::timeout(Duration::from_secs(5), gate.opened())
            .await
            .expect("the gate opens although the clock is gone");
        assert!(Instant::now() >= at, "opened before its instant");
    }
}
