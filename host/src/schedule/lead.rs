//! The claim lead: how far ahead of its tick a scheduled run is claimed,
//! adapted to how long claims take. Pure, like the rest of `schedule`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// How far ahead of its tick a scheduled run is claimed, so that the claim
/// (a store round trip, a disk sync on the embedded store) is done and the
/// run's task spawned when the tick comes, and the run starts on the
/// instant, waiting for nothing.
///
/// The lead adapts. After every turn of claims the worker reports, for each
/// claim made ahead, the lead it was made with and its slack (tick − the
/// instant the turn's runs were spawned; negative when that came after the
/// tick). If the least slack is under `MARGIN`, the lead grows at once to
/// what that claim would have needed (its lead − its slack + the margin);
/// the turns of one burst thus raise it once, not once per turn. It shrinks
/// only when a turn's slack is ample (over four margins), no sooner than
/// `HOLD` after the last turn short of the margin (whether or not that one
/// raised it) and by a sixteenth at most once a `SHRINK_EVERY`:
/// a burst takes several turns, and its first turns always have slack to
/// spare, so shrinking on each of them took from the lead what the burst's
/// last turn had just shown it needs (10,000 jobs due every second: a third
/// of the runs spawned after their tick). Nor does it shrink below what a
/// turn short of the margin needed, for `FLOOR_FOR` after that turn: shrunk
/// below it, the next burst comes in short again, and its runs start late
/// (10,000 jobs due every second: late spawns in 7 of 61 seconds, one after
/// each shrink past the need). One slow commit is still not paid for with
/// a long lead ever after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLead {
    current: Duration,
    /// When a turn last came in short of the margin, and when the lead
    /// last shrank.
    short_at: Option<Timestamp>,
    shrank_at: Option<Timestamp>,
    /// The most a turn short of the margin needed within `FLOOR_FOR`, and
    /// when that turn was: the lead does not shrink below it meanwhile.
    floor: Option<(Duration, Timestamp)>,
}

impl ClaimLead {
    /// The shortest lead: enough for a claim round trip on an idle store.
    pub const MIN: Duration = Duration::from_millis(20);
    /// The longest: a claim is never made more than this before its tick,
    /// which bounds how long a run shows as claimed but not started.
    pub const MAX: Duration = Duration::from_secs(1);
    /// The slack a turn should keep; less than this grows the lead.
    pub const MARGIN: Duration = Duration::from_millis(10);
    /// After a turn short of the margin, the lead stays for at least this long.
    pub const HOLD: Duration = Duration::from_secs(10);
    /// It shrinks by a sixteenth at most this often.
    pub const SHRINK_EVERY: Duration = Duration::from_secs(1);
    /// What a turn short of the margin needed is kept as a floor this long.
    pub const FLOOR_FOR: Duration = Duration::from_secs(300);

    pub fn new() -> Self {
        Self {
            current: Self::MIN,
            short_at: None,
            shrank_at: None,
            floor: None,
        }
    }

    pub fn current(&self) -> Duration {
        self.current
    }

    /// When to act on a tick due at `tick`.
    pub fn act_at(&self, tick: Timestamp) -> Timestamp {
        let lead = SignedDuration::try_from(self.current).unwrap_or(SignedDuration::ZERO);
        tick.checked_sub(lead).unwrap_or(tick)
    }

    /// Takes a turn's claims made ahead into account, at `now`: `(lead it
    /// was made with, slack)` each.
    pub fn observe(&mut self, now: Timestamp, claims: impl IntoIterator<Item = (Duration, SignedDuration)>) {
        let margin = SignedDuration::try_from(Self::MARGIN).unwrap_or(SignedDuration::ZERO);
        let mut least_slack: Option<SignedDuration> = None;
        let mut needed = Duration::ZERO;
        for (lead, slack) in claims {
            least_slack = Some(least_slack.map_or(slack, |least| least.min(slack)));
            if slack < margin {
                let shortfall = Duration::try_from(margin - slack).unwrap_or(Duration::ZERO);
                needed = needed.max(lead.saturating_add(shortfall));
            }
        }
        let Some(least_slack) = least_slack else { return };
        let since = |at: Option<Timestamp>, wait: Duration| {
            at.is_none_or(|at| now.duration_since(at) >= SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX))
        };
        let floor = self
            .floor
            .filter(|(_, at)| !since(Some(*at), Self::FLOOR_FOR))
            .map(|(floor, _)| floor);
        if least_slack < margin {
            let needed = needed.min(Self::MAX);
            if needed > self.current {
                self.current = needed;
            }
            self.short_at = Some(now);
            self.floor = Some((floor.map_or(needed, |floor| floor.max(needed)), now));
        } else if least_slack > margin * 4
            && since(self.short_at, Self::HOLD)
            && since(self.shrank_at, Self::SHRINK_EVERY)
        {
            let shrunk = self.current.saturating_sub(self.current / 16);
            self.current = shrunk.max(floor.unwrap_or(Self::MIN)).max(Self::MIN);
            self.shrank_at = Some(now);
        }
    }
}

impl Default for ClaimLead {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    /// `seconds` after the tests' origin.
    fn at(seconds: f64) -> Timestamp {
        ts("2026-01-01T00:00:00Z")
            .checked_add(SignedDuration::from_secs_f64(seconds))
            .expect("in range")
    }

    #[test]
    fn the_claim_lead_grows_by_the_shortfall_and_shrinks_slowly() {
        let ms = SignedDuration::from_millis;
        let mut lead = ClaimLead::new();
        assert_eq!(lead.current(), ClaimLead::MIN);
        // Claimed 20 ms ahead, spawned 100 ms after the tick: the lead
        // becomes what that claim needed (20 + 100 + the 10 ms margin).
        lead.observe(at(0.0), [(ClaimLead::MIN, ms(-100)), (ClaimLead::MIN, ms(50))]);
        assert_eq!(lead.current(), Duration::from_millis(130));
        // A later turn of the same burst, claimed with the old lead and
        // later still, raises it to what that one needed, not by as much again.
        lead.observe(at(0.1), [(ClaimLead::MIN, ms(-150))]);
        assert_eq!(lead.current(), Duration::from_millis(180));
        // One that needed less does not lower it.
        lead.observe(at(0.2), [(Duration::from_millis(100), ms(5))]);
        assert_eq!(lead.current(), Duration::from_millis(180));
        // Slack within the margin's band: no change.
        lead.observe(at(1.0), [(Duration::from_millis(180), ms(20))]);
        assert_eq!(lead.current(), Duration::from_millis(180));
        // Ample slack, as the first turns of every burst have: held for
        // `HOLD` after the last turn short of the margin (at 0.2 s, which
        // did not raise it).
        for second in 1..10 {
            lead.observe(at(f64::from(second)), [(Duration::from_millis(180), ms(100))]);
            assert_eq!(lead.current(), Duration::from_millis(180), "at {second} s");
        }
        // Past the hold, it would shrink, but not below what the turn at
        // 0.1 s needed (180 ms), for `FLOOR_FOR` after the last short turn.
        for second in 10..300 {
            lead.observe(at(f64::from(second) + 0.2), [(Duration::from_millis(180), ms(100))]);
            assert_eq!(lead.current(), Duration::from_millis(180), "at {second} s");
        }
        // Then down by a sixteenth, at most once a second.
        lead.observe(at(300.2), [(Duration::from_millis(180), ms(100))]);
        assert_eq!(lead.current(), Duration::from_micros(180_000 - 180_000 / 16));
        lead.observe(at(300.5), [(Duration::from_millis(180), ms(100))]);
        assert_eq!(lead.current(), Duration::from_micros(180_000 - 180_000 / 16));
        for second in 301..600 {
            lead.observe(at(f64::from(second)), [(Duration::from_millis(100), ms(1000))]);
        }
        assert_eq!(lead.current(), ClaimLead::MIN);
        // A turn without claims made ahead says nothing.
        lead.observe(at(600.0), []);
        assert_eq!(lead.current(), ClaimLead::MIN);
    }

    #[test]
    fn the_claim_lead_is_bounded() {
        let mut lead = ClaimLead::new();
        lead.observe(
            ts("2026-01-01T00:00:00Z"),
            [(ClaimLead::MIN, SignedDuration::from_secs(-30))],
        );
        assert_eq!(lead.current(), ClaimLead::MAX);
        let tick = ts("2026-01-01T00:00:01Z");
        assert_eq!(lead.act_at(tick), ts("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn a_lead_that_came_in_short_is_a_floor_until_it_is_old() {
        let ms = SignedDuration::from_millis;
        let mut lead = ClaimLead::new();
        // A burst needs 60 ms (claimed 20 ms ahead, spawned 30 ms late).
        lead.observe(at(0.0), [(ClaimLead::MIN, ms(-30))]);
        assert_eq!(lead.current(), Duration::from_millis(60));
        // A bigger one later needs 100 ms: the floor is the most either needed.
        lead.observe(at(100.0), [(Duration::from_millis(60), ms(-30))]);
        assert_eq!(lead.current(), Duration::from_millis(100));
        // Ample slack ever after: held at 100 ms until `FLOOR_FOR` after the
        // second short turn (the first's 60 ms would have expired at 300 s).
        for second in 111..400 {
            lead.observe(at(f64::from(second)), [(Duration::from_millis(100), ms(500))]);
            assert_eq!(lead.current(), Duration::from_millis(100), "at {second} s");
        }
        lead.observe(at(400.0), [(Duration::from_millis(100), ms(500))]);
        assert!(
            lead.current() < Duration::from_millis(100),
            "the floor outlived `FLOOR_FOR`"
        );
    }
}
