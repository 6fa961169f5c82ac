//! Wall-clock times for a session's segments: "time you can testify with".
//!
//! ffmpeg gives each segment's exact position in *media* time (the camera's RTP clock, from ffmpeg's segment
//! list). vigil observes when each segment reached the disk in *wall* time (the file's birth and last-write
//! times). An observation is never early, only late (scheduling, a slow disk), except by at most one frame.
//! A session's anchor (wall time of media time 0) is therefore:
//!
//! - at the start, the earliest observation of its first segments (ffmpeg probes its input before writing,
//!   so the very first file is created a little late; the next ones are written live);
//! - afterwards, slewed towards each new observation by at most 500 ppm of the segment's duration, as
//!   Moonfire NVR does: a camera clock that drifts against the box's NTP-disciplined clock is followed over a
//!   session of weeks, and no single late observation moves a segment by more than a millisecond or so.
//!
//! So consecutive segments stay contiguous within 500 ppm and their times follow the box's clock.
//!
//! A camera's timeline never goes backwards. When the box's clock steps back (an NTP correction, an operator's
//! `date -s`) before a new session starts or while its first segments settle the anchor, its observations
//! can be earlier than where the camera's previous session ended, or than the session's own start (settling
//! takes any earlier observation): the session's anchor is held at that point ([`Timeline::not_before`]), so
//! no two sessions overlap and every playlist stays in recording order; the watcher logs a warning with the
//! size of the step. The footage is then stamped ahead of the clock by at most the backward steps since recording last
//! paused; after the first segments the usual slew follows the clock back at 500 ppm, and the lead is gone
//! at the next recording gap longer than it. A step of more than [`MAX_HOLD_MS`] (3 h: a box that booted with
//! its clock days ahead, then corrected) is not held — that would keep the camera's footage days ahead for
//! good — the session takes the corrected clock and the watcher logs an error: its footage overlaps in time
//! with what was stamped under the wrong clock. A forward step needs nothing: inside a session it is absorbed by the slew like any late observation;
//! a session that starts after it starts later, leaving a gap marked by a discontinuity like any restart.

/// How many segments may still pull the anchor down to an earlier observation.
const SETTLE: u32 = 5;
/// Largest correction, in parts per million of the segment's duration.
pub const SLEW_PPM: f64 = 500.0;

/// A session's mapping from media time to wall time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Wall-clock milliseconds at media time 0.
    anchor_ms: Option<f64>,
    placed: u32,
    /// Media time (s) of the end of the last placed segment.
    last_media_end: Option<f64>,
    /// Wall-clock ms no segment may start before while the anchor settles: the end of the camera's previous
    /// session.
    floor_ms: Option<f64>,
    /// The lowest anchor the floor allows (fixed by the first placed segment).
    min_anchor_ms: Option<f64>,
    /// How far (ms) the floor held the anchor above the observations, at most.
    held_back_ms: f64,
    /// How far (ms) the observations were below the floor when that was more than [`MAX_HOLD_MS`] (not held).
    refused_ms: f64,
}

/// The largest lead a new session is held at (3 h: room for a wrong time zone or daylight-saving offset
/// corrected, an hour's drift); a larger one is taken as it is.
pub const MAX_HOLD_MS: f64 = 3.0 * 3600.0 * 1000.0;

impl Timeline {
    /// A timeline whose anchor is already known (from a catalogued segment).
    pub fn anchored(anchor_ms: f64) -> Timeline {
        Timeline {
            anchor_ms: Some(anchor_ms),
            placed: SETTLE,
            ..Timeline::default()
        }
    }

    /// A new session's timeline that never starts before `floor_ms` (the later of the session's own start and
    /// the wall-clock end of the camera's previous session): if the observations of its first segments are
    /// earlier (the clock stepped back), the anchor is held at the floor.
    pub fn not_before(floor_ms: f64) -> Timeline {
        Timeline {
            floor_ms: Some(floor_ms),
            ..Timeline::default()
        }
    }

    /// How far (ms) the floor held this session's anchor above what its observations said: the size of a
    /// backward clock step (0 if none).
    pub fn held_back_ms(&self) -> f64 {
        self.held_back_ms
    }

    /// How far (ms) this session's observations were below the floor when that was too far to hold
    /// ([`MAX_HOLD_MS`]): the session overlaps in time with footage stamped before the step (0 if none).
    pub fn refused_ms(&self) -> f64 {
        self.refused_ms
    }

    /// The anchor, if any segment was placed.
    pub fn anchor_ms(&self) -> Option<f64> {
        self.anchor_ms
    }

    /// Wall-clock start (unix ms) of the segment at `[media_start, media_start + media_dur)` (seconds), given
    /// `observed`: an observation of wall − media (ms) for it, if the file could be looked at. `fallback` is
    /// used as the anchor when nothing was observed yet.
    pub fn place(
        &mut self,
        media_start: f64,
        media_dur: f64,
        observed: Option<f64>,
        fallback: f64,
    ) -> i64 {
        let mut anchor = match (self.anchor_ms, observed) {
            (None, Some(o)) => o,
            (None, None) => fallback,
            (Some(a), Some(o)) if self.placed < SETTLE && o < a => o,
            (Some(a), Some(o)) => {
                // Slew over the media time elapsed since the last placed segment (its duration, normally).
                let elapsed = self
                    .last_media_end
                    .map_or(media_dur, |e| (media_start + media_dur - e).max(media_dur));
                let max = elapsed * 1000.0 * SLEW_PPM / 1e6;
                a + (o - a).clamp(-max, max)
            }
            (Some(a), None) => a,
        };
        if self.placed < SETTLE
            && let Some(floor) = self.floor_ms
        {
            let min = *self
                .min_anchor_ms
                .get_or_insert(floor - media_start * 1000.0);
            if anchor < min && min - anchor <= MAX_HOLD_MS {
                self.held_back_ms = self.held_back_ms.max(min - anchor);
                anchor = min;
            } else if anchor < min {
                // Too far to bridge: the footage before was stamped by a clock that was far ahead (a bad RTC
                // corrected by NTP). Holding would keep every later session that far ahead; take the clock.
                self.refused_ms = self.refused_ms.max(min - anchor);
            }
        }
        self.anchor_ms = Some(anchor);
        self.placed = self.placed.saturating_add(1);
        self.last_media_end = Some(media_start + media_dur);
        (anchor + media_start * 1000.0).round() as i64
    }
}

/// The observation for a segment file: wall − media (ms), from its birth time (≈ its first packet's arrival)
/// and its last write (≈ its last packet's arrival, just before the next segment's first), whichever is
/// earlier. `None` if the file's times cannot be read.
pub fn observe(meta: &std::fs::Metadata, media_start: f64, media_end: f64) -> Option<f64> {
    let ms = |t: std::time::SystemTime| -> Option<f64> {
        Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64() * 1000.0)
    };
    let by_birth = meta
        .created()
        .ok()
        .and_then(ms)
        .map(|b| b - media_start * 1000.0);
    let by_write = meta
        .modified()
        .ok()
        .and_then(ms)
        .map(|m| m - media_end * 1000.0);
    match (by_birth, by_write) {
        (Some(b), Some(w)) => Some(b.min(w)),
        (b, w) => b.or(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_segments_take_the_earliest_observation_then_only_slew() {
        let mut t = Timeline::default();
        // Segment 0's file was created 300 ms late (ffmpeg probing), segment 1's on time.
        assert_eq!(t.place(0.0, 2.0, Some(1_000_300.0), 0.0), 1_000_300);
        assert_eq!(t.place(2.0, 2.0, Some(1_000_000.0), 0.0), 1_002_000);
        // Later, a late observation (the disk stalled 2 s) moves the anchor by at most 500 ppm of 2 s.
        for k in 2..SETTLE as i64 {
            t.place(2.0 * k as f64, 2.0, Some(1_000_000.0), 0.0);
        }
        let s = t.place(10.0, 2.0, Some(1_002_000.0), 0.0);
        assert_eq!(s, 1_000_000 + 10_000 + 1);
        // Nothing observed: the anchor stays.
        assert_eq!(t.place(12.0, 2.0, None, 0.0), 1_000_000 + 12_000 + 1);
        // A fresh timeline with nothing observed uses the fallback.
        assert_eq!(Timeline::default().place(1.5, 2.0, None, 7000.0), 8500);
        assert_eq!(Timeline::anchored(100.0).place(1.0, 2.0, None, 0.0), 1100);
    }

    #[test]
    fn a_session_after_a_backward_step_starts_where_the_previous_one_ended() {
        // The previous session ended at 10 000 000; the clock then stepped back by an hour.
        let end = 10_000_000.0;
        let step = 3_600_000.0;
        let mut t = Timeline::not_before(end);
        // Its first segment (media 0.4..2.4 s: joined mid-GOP) is observed an hour early, the next ones too,
        // and settling would pull the anchor further down to an earlier observation: held at the floor.
        assert_eq!(
            t.place(0.4, 2.0, Some(end + 1_000.0 - step), 0.0),
            10_000_000
        );
        assert_eq!(t.place(2.4, 2.0, Some(end + 500.0 - step), 0.0), 10_002_000);
        for k in 2..SETTLE as i64 {
            let s = t.place(0.4 + 2.0 * k as f64, 2.0, Some(end - step), 0.0);
            assert_eq!(s, 10_000_000 + 2_000 * k);
        }
        // The size of the step, as far as the observations tell (the first file was created 400 ms late).
        assert_eq!(t.held_back_ms(), step - 400.0);
        // Settled: the usual slew follows the clock back, at most 500 ppm (1 ms per 2 s segment).
        let s = t.place(10.4, 2.0, Some(end - step), 0.0);
        assert_eq!(s, 10_000_000 + 10_000 - 1);
        // Without a floor the same observations would start an hour before the previous session's end.
        let mut free = Timeline::default();
        assert!(free.place(0.4, 2.0, Some(end + 1_000.0 - step), 0.0) < end as i64);
        // A later observation (a forward step, an outage) is not touched: a gap, not a hold.
        let mut after = Timeline::not_before(end);
        assert_eq!(after.place(0.0, 2.0, Some(end + step), 0.0), 13_600_000);
        assert_eq!(after.held_back_ms(), 0.0);
        // A step beyond what is bridged (a clock days ahead, corrected) is taken as it is, and said.
        let days = 3.0 * 86_400_000.0;
        let mut far = Timeline::not_before(end);
        assert_eq!(
            far.place(0.0, 2.0, Some(end - days), 0.0),
            (end - days) as i64
        );
        assert_eq!((far.held_back_ms(), far.refused_ms()), (0.0, days));
        // The fallback (nothing observed) is held too.
        assert_eq!(
            Timeline::not_before(end).place(0.0, 2.0, None, end - 60_000.0),
            10_000_000
        );
    }

    proptest! {
        /// A camera clock off by up to ±300 ppm, observations late by 0..80 ms (and now and then by seconds):
        /// once the first segments have settled the anchor, every segment stays within 0.5 s of the truth and
        /// consecutive segments are contiguous within 500 ppm.
        #[test]
        fn drift_is_followed_within_the_slew_limit(
            ppm in -300.0f64..300.0,
            delays in prop::collection::vec(prop_oneof![20 => 0.0f64..80.0, 1 => 0.0f64..3000.0], 2000),
        ) {
            let mut t = Timeline::default();
            let start_wall = 1.8e12;
            let dur = 2.0;
            let mut prev: Option<(i64, f64)> = None;
            for (k, delay) in delays.iter().enumerate() {
                let media_start = k as f64 * dur;
                // True wall time at which media time m was captured: the camera's clock runs (1 + ppm) fast.
                let truth = start_wall + media_start * 1000.0 / (1.0 + ppm / 1e6);
                let observed = truth + delay - media_start * 1000.0;
                let s = t.place(media_start, dur, Some(observed), 0.0);
                if k < SETTLE as usize {
                    prev = Some((s, dur));
                    continue;
                }
                prop_assert!(((s as f64) - truth).abs() < 500.0, "segment {} off by {} ms", k, s as f64 - truth);
                if let Some((ps, pd)) = prev {
                    let gap = (s - ps) as f64 - pd * 1000.0;
                    prop_assert!(gap.abs() <= pd * 1000.0 * SLEW_PPM / 1e6 + 1.0, "gap {} ms", gap);
                }
                prev = Some((s, dur));
            }
        }
    }
}
