//! How many warm sandboxes a pool needs: by Little's law, the sandboxes being made at once to
//! keep up are the arrival rate times the time one takes to make, so the target is
//! `ceil(refill time / time between arrivals) + 1` (one ready for the next job), between the
//! configured floor (`warm_pool`) and the pool's slots (more could never be in use at once).
//! Both times are moving averages. Jobs come in bursts: a pause (a gap longer than one refill,
//! in which the pool has time to refill anyway) is not averaged in, so the pool is ready for
//! the whole of the next burst; instead the time since the last arrival within a burst halves
//! the rate every [`HALF_LIFE`], so a pool no longer seeing bursts shrinks back to its floor
//! within minutes.
//!
//! While jobs run the pool refills only once it runs low (see [`super::pool`]), so it also
//! holds a whole burst: the target is at least the average number of jobs in the bursts that
//! ended, plus one.

use std::time::{Duration, Instant};

/// Weight of the newest sample in the moving averages.
const ALPHA: f64 = 0.25;

/// While no job arrives, the rate the target assumes halves this often.
const HALF_LIFE: Duration = Duration::from_secs(30);

/// Refill time assumed before the first sandbox was made: a container start on a busy host.
const FIRST_REFILL: Duration = Duration::from_millis(500);

/// Arrivals and refill times of one warm pool, and the target they give.
#[derive(Debug, Clone)]
pub(super) struct Demand {
    floor: usize,
    ceiling: usize,
    last_arrival: Option<Instant>,
    /// The last arrival that was not after a pause.
    last_burst: Option<Instant>,
    /// Jobs in the burst going on (since the last pause).
    in_burst: usize,
    /// Average jobs per burst, once one ended.
    burst: Option<f64>,
    /// Average seconds between two jobs asking for a sandbox.
    interval: Option<f64>,
    /// Average seconds to create and start one, once one was made.
    refill: Option<f64>,
}

impl Demand {
    /// No arrivals yet: the target is `floor`, never above `ceiling` (at least `floor`).
    pub fn new(floor: usize, ceiling: usize) -> Self {
        Self {
            floor,
            ceiling: ceiling.max(floor),
            last_arrival: None,
            last_burst: None,
            in_burst: 0,
            burst: None,
            interval: None,
            refill: None,
        }
    }

    /// The most sandboxes the pool may hold.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// A job asked for a sandbox at `now`.
    pub fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = now.saturating_duration_since(last).as_secs_f64();
            if gap < self.refill() {
                self.interval = Some(average(self.interval, gap));
                self.last_burst = Some(now);
                self.in_burst += 1;
                self.last_arrival = Some(now);
                return;
            }
            self.burst = Some(average(self.burst, self.in_burst as f64));
        }
        self.in_burst = 1;
        self.last_arrival = Some(now);
    }

    fn refill(&self) -> f64 {
        self.refill.unwrap_or(FIRST_REFILL.as_secs_f64())
    }

    /// How long making one sandbox takes, on average (a guess before the first).
    pub fn refill_time(&self) -> Duration {
        Duration::from_secs_f64(self.refill())
    }

    /// A sandbox took `took` to make.
    pub fn refilled(&mut self, took: Duration) {
        self.refill = Some(average(self.refill, took.as_secs_f64()));
    }

    /// The sandboxes to keep ready or in the making at `now`.
    pub fn target(&self, now: Instant) -> usize {
        let (Some(interval), Some(last)) = (self.interval, self.last_burst) else {
            return self.floor;
        };
        let idle = now.saturating_duration_since(last).as_secs_f64();
        let decay = (idle / HALF_LIFE.as_secs_f64()).exp2();
        let interval = (interval * decay).max(f64::EPSILON);
        // Less a hair, so that a ratio of exactly 4 that floating point makes 4.000...1 is 4.
        let needed = (self.refill() / interval - 1e-9).ceil() + 1.0;
        let burst = self.burst.unwrap_or(0.0) / decay;
        let needed = needed.max((burst - 1e-9).ceil() + 1.0);
        // Saturating float-to-int cast: an absurd ratio is simply the ceiling.
        (needed as usize).clamp(self.floor, self.ceiling)
    }
}

fn average(previous: Option<f64>, sample: f64) -> f64 {
    match previous {
        Some(previous) => previous + ALPHA * (sample - previous),
        None => sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_follows_arrivals_times_refill_within_floor_and_slots() {
        let start = Instant::now();
        let mut demand = Demand::new(2, 8);
        assert_eq!(demand.target(start), 2, "no arrivals: the floor");
        demand.refilled(Duration::from_millis(400));
        demand.refilled(Duration::from_millis(400));
        for i in 0..40 {
            demand.arrived(start + Duration::from_millis(100 * i));
        }
        let now = start + Duration::from_millis(3_900);
        // About 0.4 s per refill over 0.1 s between jobs: 4 in the making, plus one ready.
        assert_eq!(demand.target(now), 5);
        for i in 40..80 {
            demand.arrived(start + Duration::from_millis(100 * 39 + 10 * (i - 39)));
        }
        assert_eq!(
            demand.target(start + Duration::from_millis(4_310)),
            8,
            "capped at the slots"
        );
        demand.arrived(start + Duration::from_secs(10));
        assert_eq!(
            demand.target(start + Duration::from_secs(10)),
            8,
            "a pause between bursts keeps the pool ready for the next"
        );
        assert_eq!(
            demand.target(start + Duration::from_secs(600)),
            2,
            "an idle pool decays to its floor"
        );
        assert_eq!(Demand::new(3, 1).ceiling(), 3, "the floor wins over slots");
    }

    #[test]
    fn gaps_between_bursts_do_not_shrink_the_pool_the_bursts_need() {
        let start = Instant::now();
        let mut demand = Demand::new(2, 8);
        demand.refilled(Duration::from_secs(1));
        // Bursts of eight jobs 60 ms apart, three seconds apart: the pool refills in between.
        for burst in 0..5u64 {
            for job in 0..8u64 {
                demand.arrived(start + Duration::from_millis(3_000 * burst + 60 * job));
            }
        }
        assert_eq!(demand.target(start + Duration::from_secs(15)), 8);
    }
}
