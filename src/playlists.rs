//! What goes into each of a camera's playlists, read from the catalog: the code path every playlist route
//! uses (and the one the property tests below drive).
//!
//! - **live**: the last `window` segments of the camera's live sequence. MEDIA-SEQUENCE is the first
//!   segment's live position and DISCONTINUITY-SEQUENCE comes from its stored discontinuity number, so both
//!   come from the same counters as the segments listed, at O(window) cost whatever the history.
//! - **today**: the live-sequence segments of the day so far, an EVENT playlist that only ever grows at its end;
//!   if retention has deleted the start of the day, it is served as a sliding playlist (no PLAYLIST-TYPE) with
//!   the same counters, which RFC 8216 allows to lose segments at its start.
//! - **vod**: every segment of a time range (late-catalogued ones included), with ENDLIST.
//!
//! TARGETDURATION is the camera's configured value raised to cover the longest segment the camera has ever
//! recorded, so it never goes down and is never below any EXTINF.

use crate::catalog::{Catalog, Segment};
use crate::error::Result;
use crate::hls::{self, Entry, Kind, Playlist};

/// A segment's URI in a camera's playlists (relative to `/cameras/<id>/`).
pub fn uri(s: &Segment) -> String {
    format!("segments/{}.ts", s.id)
}

/// How a playlist names its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uris {
    /// `segments/<id>.ts`: this node's catalog ids (its own footage).
    Ids,
    /// `ipfs/<cid>.ts`: the same on every node (replay of footage recorded elsewhere, behind a load balancer);
    /// the IPFS proxy route serves a local copy when there is one.
    Cids,
}

fn entry_with(s: &Segment, discontinuity: bool, uris: Uris) -> Entry {
    match (uris, &s.cid) {
        (Uris::Cids, Some(cid)) => Entry {
            uri: format!("ipfs/{cid}.ts"),
            start_ms: s.start_ms,
            duration_ms: s.duration_ms.max(0) as u64,
            discontinuity,
        },
        _ => entry(s, discontinuity),
    }
}

fn entry(s: &Segment, discontinuity: bool) -> Entry {
    Entry {
        uri: uri(s),
        start_ms: s.start_ms,
        duration_ms: s.duration_ms.max(0) as u64,
        discontinuity,
    }
}

/// The camera's TARGETDURATION: configured, raised to the ceiling of its longest segment ever.
fn target(catalog: &Catalog, camera: &str, configured: u64) -> Result<u64> {
    let longest = catalog.camera_stats(camera)?.max_duration_ms.max(0) as u64;
    Ok(configured.max(longest.div_ceil(1000)).max(1))
}

/// The live playlist: the last `window` segments of the camera's live sequence.
pub fn live(
    catalog: &Catalog,
    camera: &str,
    window: usize,
    configured_target: u64,
) -> Result<String> {
    let rows = catalog.live_window(camera, window)?;
    let target_duration = target(catalog, camera, configured_target)?;
    let entries: Vec<Entry> = rows.iter().map(|s| entry(s, s.join)).collect();
    let (media_sequence, discontinuity_sequence) = match rows.first() {
        Some(f) => (
            f.lseq.unwrap_or(0).max(0) as u64,
            (f.disc - i64::from(f.join)).max(0) as u64,
        ),
        // Nothing on disk (yet, or any more): point past the last segment, never back to 0.
        None => {
            let stats = catalog.camera_stats(camera)?;
            (
                stats.last_lseq.map_or(0, |l| l + 1).max(0) as u64,
                stats.disc.max(0) as u64,
            )
        }
    };
    Ok(hls::render(&Playlist {
        kind: Kind::Live,
        target_duration,
        media_sequence,
        discontinuity_sequence,
        entries: &entries,
        can_skip_until: None,
        skipped: 0,
    }))
}

/// Today's playlist, built: rendered whole on every new segment, and as a delta update for each reload of a
/// client that already has it.
#[derive(Debug, Clone)]
pub struct Today {
    kind: Kind,
    target_duration: u64,
    media_sequence: u64,
    discontinuity_sequence: u64,
    entries: Vec<Entry>,
}

impl Today {
    /// Clients may skip what is older than six target durations (RFC 8216bis's minimum).
    pub fn skip_until_s(&self) -> u64 {
        6 * hls::target_duration_of(&self.entries, self.target_duration)
    }

    fn playlist(&self, skipped: usize, sliding: bool) -> Playlist<'_> {
        Playlist {
            kind: if sliding { Kind::Live } else { self.kind },
            target_duration: self.target_duration,
            media_sequence: self.media_sequence,
            discontinuity_sequence: self.discontinuity_sequence,
            entries: &self.entries,
            can_skip_until: Some(self.skip_until_s()),
            skipped,
        }
    }

    /// The whole playlist. `sliding`: without PLAYLIST-TYPE (for `day.m3u8` without a date, which moves on to
    /// the next day at midnight: a sliding playlist may lose its start, an EVENT playlist may not).
    pub fn render(&self, sliding: bool) -> String {
        hls::render(&self.playlist(0, sliding))
    }

    /// A Playlist Delta Update (`_HLS_skip=YES`): the same playlist with its older part replaced by
    /// `#EXT-X-SKIP`, so a reload costs O(the last few segments) instead of O(the day so far).
    pub fn render_delta(&self, sliding: bool) -> String {
        let skipped = hls::skippable(&self.entries, self.skip_until_s());
        hls::render(&self.playlist(skipped, sliding))
    }
}

/// Today's playlist (`[from_ms, to_ms)` is the day, in the node's time zone): EVENT while the whole day so
/// far is on disk, sliding once retention has deleted its start.
pub fn today(
    catalog: &Catalog,
    camera: &str,
    from_ms: i64,
    to_ms: i64,
    configured_target: u64,
) -> Result<Today> {
    let rows = catalog.live_range(camera, from_ms, to_ms)?;
    let stats = catalog.camera_stats(camera)?;
    let target_duration = target(catalog, camera, configured_target)?;
    let head_deleted = stats.deleted_until_ms.is_some_and(|d| d >= from_ms);
    // The first entry never carries a DISCONTINUITY tag; DISCONTINUITY-SEQUENCE is its discontinuity number.
    let entries: Vec<Entry> = rows
        .iter()
        .enumerate()
        .map(|(i, s)| entry(s, i > 0 && s.join))
        .collect();
    let (media_sequence, discontinuity_sequence) = match rows.first() {
        Some(f) => (f.lseq.unwrap_or(0).max(0) as u64, f.disc.max(0) as u64),
        None => (
            stats.last_lseq.map_or(0, |l| l + 1).max(0) as u64,
            stats.disc.max(0) as u64,
        ),
    };
    Ok(Today {
        kind: if head_deleted {
            Kind::Live
        } else {
            Kind::Event
        },
        target_duration,
        media_sequence,
        discontinuity_sequence,
        entries,
    })
}

/// The segments of a camera that overlap `[from_ms, to_ms)`: those that start in it and the one already running
/// at `from_ms` (a segment is at most a few minutes long; two are looked back for). Oldest first.
pub fn overlapping(
    catalog: &Catalog,
    camera: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Segment>> {
    const LOOK_BACK_MS: i64 = 120_000;
    let mut rows = catalog.range(camera, from_ms.saturating_sub(LOOK_BACK_MS), to_ms)?;
    rows.retain(|s| s.start_ms + s.duration_ms > from_ms);
    Ok(rows)
}

/// A finished range as VOD: segments that start in `[from_ms, to_ms)`, plus the one already running at
/// `from_ms` when `include_running` (a segment is at most a few minutes long; two are looked back for).
pub fn vod(
    catalog: &Catalog,
    camera: &str,
    from_ms: i64,
    to_ms: i64,
    include_running: bool,
    configured_target: u64,
    uris: Uris,
) -> Result<String> {
    let mut rows = if include_running {
        overlapping(catalog, camera, from_ms, to_ms)?
    } else {
        catalog.range(camera, from_ms, to_ms)?
    };
    rows.dedup_by_key(|s| s.id);
    let entries: Vec<Entry> = rows
        .iter()
        .enumerate()
        .map(|(i, s)| entry_with(s, i > 0 && s.session != rows[i - 1].session, uris))
        .collect();
    let target_duration = target(catalog, camera, configured_target)?;
    Ok(hls::render(&Playlist {
        kind: Kind::Vod,
        target_duration,
        media_sequence: 0,
        discontinuity_sequence: 0,
        entries: &entries,
        can_skip_until: None,
        skipped: 0,
    }))
}

#[cfg(test)]
mod tests {
    //! Properties of the playlists a player sees across reloads, driven through the catalog with random
    //! histories: sessions that restart, partial last segments catalogued late, segments longer than the
    //! target, retention deleting the oldest.

    use std::collections::HashMap;

    use m3u8_rs::{MediaPlaylist, MediaPlaylistType};
    use proptest::prelude::*;

    use super::*;
    use crate::catalog::NewSegment;

    #[derive(Debug, Clone)]
    enum Op {
        /// The next segment of the current session, this long.
        Segment(i64),
        /// ffmpeg restarted: a new session.
        Restart,
        /// A segment of an older session catalogued late (e.g. a partial segment found at a restart).
        Late,
        /// Retention deletes the oldest n segments.
        Delete(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (500i64..9000).prop_map(Op::Segment),
            1 => Just(Op::Restart),
            1 => Just(Op::Late),
            1 => (1usize..4).prop_map(Op::Delete),
        ]
    }

    fn parse(text: &str) -> MediaPlaylist {
        m3u8_rs::parse_media_playlist_res(text.as_bytes())
            .unwrap_or_else(|e| panic!("does not parse: {e:?}\n{text}"))
    }

    /// What a player has learnt about each segment URI so far.
    #[derive(Default)]
    struct Seen {
        media_sequence: HashMap<String, u64>,
        discontinuity: HashMap<String, u64>,
        last_media_sequence: u64,
        last_dsn: u64,
        last_target: u64,
    }

    impl Seen {
        /// Check a reload against everything seen before, then remember it.
        fn reload(&mut self, text: &str, late: &[String]) -> MediaPlaylist {
            let pl = parse(text);
            assert!(
                pl.media_sequence >= self.last_media_sequence,
                "MEDIA-SEQUENCE went back\n{text}"
            );
            assert!(
                pl.target_duration >= self.last_target,
                "TARGETDURATION went down\n{text}"
            );
            assert!(
                pl.discontinuity_sequence >= self.last_dsn,
                "DISCONTINUITY-SEQUENCE went back\n{text}"
            );
            self.last_dsn = pl.discontinuity_sequence;
            self.last_media_sequence = pl.media_sequence;
            self.last_target = pl.target_duration;
            let mut dsn = pl.discontinuity_sequence;
            for (i, s) in pl.segments.iter().enumerate() {
                dsn += u64::from(s.discontinuity);
                let ms = pl.media_sequence + i as u64;
                assert!(
                    !late.contains(&s.uri),
                    "a late segment is in a sliding or EVENT playlist\n{text}"
                );
                assert_eq!(
                    *self.media_sequence.entry(s.uri.clone()).or_insert(ms),
                    ms,
                    "{}\n{text}",
                    s.uri
                );
                assert_eq!(
                    *self.discontinuity.entry(s.uri.clone()).or_insert(dsn),
                    dsn,
                    "{}\n{text}",
                    s.uri
                );
                assert!(
                    (f64::from(s.duration)).round() as u64 <= pl.target_duration,
                    "EXTINF above TARGETDURATION\n{text}"
                );
                assert_eq!(
                    s.program_date_time.is_some(),
                    i == 0 || s.discontinuity,
                    "PROGRAM-DATE-TIME on the first segment and on every join only\n{text}"
                );
            }
            pl
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn live_and_today_stay_consistent_across_reloads(
            ops in prop::collection::vec(op(), 1..120),
            window in 1usize..8,
        ) {
            let c = Catalog::in_memory().unwrap();
            let (day_from, day_to) = (0, i64::MAX / 2);
            let mut session = 0;
            let mut seq = 0;
            let mut t = 1_000_000;
            let mut late: Vec<String> = Vec::new();
            let mut late_seq = 10_000;
            let mut live_seen = Seen::default();
            let mut today_seen = Seen::default();
            let mut event_text: Option<String> = None;
            let mut deleted = false;
            c.open_session("cam", "s0").unwrap();
            for op in ops {
                match op {
                    Op::Segment(d) => {
                        let name = format!("s{session}");
                        c.insert(&NewSegment {
                            camera: "cam".into(), factory: "f".into(), session: name.clone(), seq,
                            path: format!("cam/{name}/{seq}"), start_ms: t, duration_ms: d, bytes: 10,
                            first_in_session: seq == 0,
                        }).unwrap();
                        seq += 1;
                        t += d;
                    }
                    Op::Restart => {
                        session += 1;
                        seq = 0;
                        t += 5000;
                        c.open_session("cam", &format!("s{session}")).unwrap();
                    }
                    Op::Late => {
                        late_seq += 1;
                        if session > 0 {
                            let name = format!("s{}", session - 1);
                            let r = c.insert(&NewSegment {
                                camera: "cam".into(), factory: "f".into(), session: name.clone(), seq: late_seq,
                                path: format!("cam/{name}/late{late_seq}"), start_ms: t - 4000, duration_ms: 700,
                                bytes: 10, first_in_session: false,
                            }).unwrap().unwrap();
                            if !r.live {
                                late.push(format!("segments/{}.ts", r.id));
                            }
                        }
                    }
                    Op::Delete(n) => {
                        let oldest = c.oldest(n, crate::catalog::Safe::Any).unwrap();
                        if !oldest.is_empty() {
                            c.tombstone(&oldest).unwrap();
                            c.forget(&oldest).unwrap();
                            deleted = true;
                        }
                    }
                }
                // A player reloads the live playlist and today's playlist after every change.
                // Configured target 10 s: every generated segment fits, so TARGETDURATION must never change.
                let text = live(&c, "cam", window, 10).unwrap();
                let pl = live_seen.reload(&text, &late);
                prop_assert_eq!(pl.target_duration, 10);
                prop_assert!(pl.playlist_type.is_none());
                prop_assert!(pl.segments.len() <= window);
                let built = today(&c, "cam", day_from, day_to, 10).unwrap();
                let text = built.render(false);
                // Its delta update is the same playlist with a prefix skipped, never the last Skip Boundary.
                let delta = built.render_delta(false);
                let full = parse(&text);
                let skipped: usize = delta
                    .lines()
                    .find_map(|l| l.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS="))
                    .map_or(0, |n| n.parse().unwrap());
                let rest = parse(&delta.replace("#EXT-X-VERSION:9", "#EXT-X-VERSION:3"));
                prop_assert_eq!(rest.media_sequence, full.media_sequence);
                prop_assert_eq!(rest.discontinuity_sequence, full.discontinuity_sequence);
                prop_assert_eq!(
                    rest.segments.iter().map(|x| &x.uri).collect::<Vec<_>>(),
                    full.segments[skipped..].iter().map(|x| &x.uri).collect::<Vec<_>>()
                );
                if skipped > 0 {
                    let kept: f32 = rest.segments.iter().map(|x| x.duration).sum();
                    prop_assert!(kept + 0.001 >= built.skip_until_s() as f32, "{}", delta);
                    prop_assert!(delta.contains("#EXT-X-VERSION:9"));
                }
                let control = format!("#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL={}.0", built.skip_until_s());
                prop_assert!(text.contains(&control), "{}", text);
                let pl = today_seen.reload(&text, &late);
                if deleted {
                    prop_assert!(pl.playlist_type.is_none(), "after deletions: sliding\n{}", text);
                } else {
                    prop_assert_eq!(pl.playlist_type, Some(MediaPlaylistType::Event));
                    // An EVENT playlist only ever grows at its end.
                    if let Some(prev) = &event_text {
                        prop_assert!(text.starts_with(prev.as_str()), "EVENT changed:\n{}\n---\n{}", prev, text);
                    }
                    event_text = Some(text);
                }
            }
            // VOD of everything: every segment still on disk, late ones included, in time order.
            let text = vod(&c, "cam", 0, i64::MAX / 2, false, 2, Uris::Ids).unwrap();
            let pl = parse(&text);
            prop_assert_eq!(pl.playlist_type, Some(MediaPlaylistType::Vod));
            prop_assert!(pl.end_list);
            prop_assert_eq!(pl.segments.len() as u64, c.count(Some("cam")).unwrap());
        }
    }

    #[test]
    fn a_delta_update_skips_all_but_the_last_six_target_durations() {
        let c = Catalog::in_memory().unwrap();
        let mut t = 0;
        for (session, n) in [("a", 30), ("b", 30)] {
            c.open_session("cam", session).unwrap();
            for seq in 0..n {
                c.insert(&NewSegment {
                    camera: "cam".into(),
                    factory: "f".into(),
                    session: session.into(),
                    seq,
                    path: format!("{session}/{seq}"),
                    start_ms: t,
                    duration_ms: 2000,
                    bytes: 1,
                    first_in_session: seq == 0,
                })
                .unwrap();
                t += 2000;
            }
        }
        let built = today(&c, "cam", 0, 86_400_000, 2).unwrap();
        let full = built.render(false);
        let delta = built.render_delta(false);
        assert_eq!(built.skip_until_s(), 12);
        assert!(
            full.contains("#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL=12.0\n"),
            "{full}"
        );
        // 60 segments of 2 s: the last 12 s (6 segments) are kept; the join (in the skipped part) is not listed.
        assert!(
            delta.contains("#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n"),
            "{delta}"
        );
        assert!(
            delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=54\n"),
            "{delta}"
        );
        assert_eq!(delta.matches("#EXTINF").count(), 6);
        assert!(!delta.contains("#EXT-X-DISCONTINUITY\n"), "{delta}");
        let header = |t: &str| {
            t.lines()
                .filter(|l| l.contains("SEQUENCE"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(header(&full), header(&delta));
        let last6: Vec<&str> = full
            .lines()
            .filter(|l| l.starts_with("segments/"))
            .skip(54)
            .collect();
        let listed: Vec<&str> = delta
            .lines()
            .filter(|l| l.starts_with("segments/"))
            .collect();
        assert_eq!(listed, last6);
    }

    #[test]
    fn a_long_segment_raises_the_target_for_good() {
        let c = Catalog::in_memory().unwrap();
        let mut t = 0;
        for (seq, d) in [3930, 2000, 2000, 2000].into_iter().enumerate() {
            c.insert(&NewSegment {
                camera: "cam".into(),
                factory: "f".into(),
                session: "s".into(),
                seq: seq as i64,
                path: "p".into(),
                start_ms: t,
                duration_ms: d,
                bytes: 1,
                first_in_session: seq == 0,
            })
            .unwrap();
            t += d;
        }
        let text = live(&c, "cam", 2, 2).unwrap();
        assert!(text.contains("#EXT-X-TARGETDURATION:4\n"), "{text}");
        assert!(
            !text.contains("#EXTINF:3.930"),
            "the long segment has left the window\n{text}"
        );
    }
}
