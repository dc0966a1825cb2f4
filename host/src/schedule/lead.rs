//! The claim lead: how far ahead of its tick a scheduled run is claimed,
//! adapted to how long claims take. Pure, like the rest of `schedule`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// How far ahead of its tick a scheduled run is claimed, so that the claim
/// (a store round trip, a disk sync on the embedded store) is done when the
/// tick comes and the run starts on the instant, waiting for nothing.
///
/// The lead adapts. After every turn of claims the worker reports, for each
/// claim made ahead, the lead it was made with and its slack (tick − the
/// instant the claim was answered; negative when the answer came after the
/// tick). If the least slack is under `MARGIN`, the lead grows at once to
/// what that claim would have needed (its lead − its slack + the margin);
/// the turns of one burst thus raise it once, not once per turn. Ample slack
/// shrinks it by a sixteenth per turn, so one slow commit is not paid for
/// with a long lead ever after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLead {
    current: Duration,
}

impl ClaimLead {
    /// The shortest lead: enough for a claim round trip on an idle store.
    pub const MIN: Duration = Duration::from_millis(20);
    /// The longest: a claim is never made more than this before its tick,
    /// which bounds how long a run shows as claimed but not started.
    pub const MAX: Duration = Duration::from_secs(1);
    /// The slack a turn should keep; less than this grows the lead.
    pub const MARGIN: Duration = Duration::from_millis(10);

    pub fn new() -> Self {
        Self { current: Self::MIN }
    }

    pub fn current(&self) -> Duration {
        self.current
    }

    /// When to act on a tick due at `tick`.
    pub fn act_at(&self, tick: Timestamp) -> Timestamp {
        let lead = SignedDuration::try_from(self.current).unwrap_or(SignedDuration::ZERO);
        tick.checked_sub(lead).unwrap_or(tick)
    }

    /// Takes a turn's claims made ahead into account: `(lead it was made
    /// with, slack)` each.
    pub fn observe(&mut self, claims: impl IntoIterator<Item = (Duration, SignedDuration)>) {
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
        let next = if least_slack < margin {
            self.current.max(needed)
        } else if least_slack > margin * 4 {
            self.current.saturating_sub(self.current / 16)
        } else {
            self.current
        };
        self.current = next.clamp(Self::MIN, Self::MAX);
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

    #[test]
    fn the_claim_lead_grows_by_the_shortfall_and_shrinks_slowly() {
        let ms = SignedDuration::from_millis;
        let mut lead = ClaimLead::new();
        assert_eq!(lead.current(), ClaimLead::MIN);
        // Claimed 20 ms ahead, answered 100 ms after the tick: the lead
        // becomes what that claim needed (20 + 100 + the 10 ms margin).
        lead.observe([(ClaimLead::MIN, ms(-100)), (ClaimLead::MIN, ms(50))]);
        assert_eq!(lead.current(), Duration::from_millis(130));
        // A later turn of the same burst, claimed with the old lead and
        // later still, raises it to what that one needed, not by as much again.
        lead.observe([(ClaimLead::MIN, ms(-150))]);
        assert_eq!(lead.current(), Duration::from_millis(180));
        // One that needed less does not lower it.
        lead.observe([(Duration::from_millis(100), ms(5))]);
        assert_eq!(lead.current(), Duration::from_millis(180));
        // Slack within the margin's band: no change.
        lead.observe([(Duration::from_millis(180), ms(20))]);
        assert_eq!(lead.current(), Duration::from_millis(180));
        // Ample slack: down by a sixteenth per turn, never below the minimum.
        lead.observe([(Duration::from_millis(180), ms(100))]);
        assert_eq!(lead.current(), Duration::from_micros(180_000 - 180_000 / 16));
        for _ in 0..200 {
            lead.observe([(Duration::from_millis(100), ms(1000))]);
        }
        assert_eq!(lead.current(), ClaimLead::MIN);
        // A turn without claims made ahead says nothing.
        lead.observe([]);
        assert_eq!(lead.current(), ClaimLead::MIN);
    }

    #[test]
    fn the_claim_lead_is_bounded() {
        let mut lead = ClaimLead::new();
        lead.observe([(ClaimLead::MIN, SignedDuration::from_secs(-30))]);
        assert_eq!(lead.current(), ClaimLead::MAX);
        let tick = ts("2026-01-01T00:00:01Z");
        assert_eq!(lead.act_at(tick), ts("2026-01-01T00:00:00Z"));
    }
}
