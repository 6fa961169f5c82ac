//! HLS media playlists (RFC 8216) for one camera, built from its catalog rows.
//!
//! A camera's recording is a sequence of *sessions* (one per ffmpeg run). Consecutive segments of the same
//! session are continuous; where the session changes there is a discontinuity, which the playlist marks with
//! `#EXT-X-DISCONTINUITY` and a fresh `#EXT-X-PROGRAM-DATE-TIME`, so that players (hls.js, ffprobe) reset
//! their timestamp mapping at each join.
//!
//! This module only renders; [`crate::playlists`] decides what goes in (from the catalog's live positions and
//! discontinuity numbers, so that a segment keeps its media sequence number and discontinuity sequence number
//! in every reload of a sliding playlist: RFC 8216 §6.2.1, §6.2.2).

use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};

/// One recorded segment as the playlist needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative or absolute URI, written as-is on the segment line.
    pub uri: String,
    /// Wall-clock start, unix milliseconds (UTC).
    pub start_ms: i64,
    /// Duration, written as `#EXTINF`.
    pub duration_ms: u64,
    /// A session join: `#EXT-X-DISCONTINUITY` (and a `#EXT-X-PROGRAM-DATE-TIME`) before this segment.
    pub discontinuity: bool,
}

/// The kind of media playlist, which decides `#EXT-X-PLAYLIST-TYPE` and `#EXT-X-ENDLIST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sliding window: no `EXT-X-PLAYLIST-TYPE`, no `EXT-X-ENDLIST`.
    Live,
    /// `EXT-X-PLAYLIST-TYPE:EVENT`, no `EXT-X-ENDLIST` (the camera's whole day so far, growing).
    Event,
    /// `EXT-X-PLAYLIST-TYPE:VOD` and `EXT-X-ENDLIST` (a finished time range).
    Vod,
}

/// Everything needed to render one playlist.
#[derive(Debug, Clone)]
pub struct Playlist<'a> {
    pub kind: Kind,
    /// EXT-X-TARGETDURATION in whole seconds. Rendered as max(this, ceil(longest EXTINF in `entries`), 1), so
    /// it is never below any EXTINF; callers pass a per-camera value that never goes down.
    pub target_duration: u64,
    /// EXT-X-MEDIA-SEQUENCE: the media sequence number of entries[0].
    pub media_sequence: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE: the discontinuity sequence number of entries[0] minus one if entries[0]
    /// carries EXT-X-DISCONTINUITY (a player adds one per tag it sees).
    pub discontinuity_sequence: u64,
    pub entries: &'a [Entry],
    /// `#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL` in seconds: clients may ask for a Playlist Delta Update
    /// (`_HLS_skip=YES`, RFC 8216bis §6.2.5.1) instead of the whole playlist on every reload.
    pub can_skip_until: Option<u64>,
    /// A Playlist Delta Update: the first `skipped` entries are replaced by `#EXT-X-SKIP` (0: the whole playlist).
    pub skipped: usize,
}

/// How many entries a delta update of `entries` may skip: those that end at least `skip_until_s` before the
/// playlist's end (RFC 8216bis: never a segment closer than the Skip Boundary to the end).
pub fn skippable(entries: &[Entry], skip_until_s: u64) -> usize {
    let total: u64 = entries.iter().map(|e| e.duration_ms).sum();
    let Some(limit) = total.checked_sub(skip_until_s * 1000) else {
        return 0;
    };
    let mut end = 0;
    entries
        .iter()
        .take_while(|e| {
            end += e.duration_ms;
            end <= limit
        })
        .count()
}

/// The `#EXT-X-VERSION` written. Version 3 allows decimal `#EXTINF` durations; no tag used needs more.
const VERSION: u32 = 3;

/// Renders `p` as an HLS media playlist: `\n` line endings, ending with a newline.
///
/// Entries flagged `discontinuity` get `#EXT-X-DISCONTINUITY`; the first entry and every such entry get
/// `#EXT-X-PROGRAM-DATE-TIME`. URIs are written verbatim, so they must not contain line breaks.
pub fn render(p: &Playlist<'_>) -> String {
    let mut out = String::with_capacity(200 + p.entries.len() * (80 + 32));
    write_playlist(&mut out, p).expect("formatting into a String cannot fail");
    out
}

/// The `#EXT-X-TARGETDURATION` for `entries` with the configured `target_duration` (whole seconds):
/// max(configured, ceil of the longest duration in seconds, 1). Ceil (rather than round) is conservative:
/// RFC 8216 §4.3.3.1 needs every EXTINF *rounded to the nearest integer* to be <= the target duration.
pub fn target_duration_of(entries: &[Entry], target_duration: u64) -> u64 {
    entries
        .iter()
        .map(|e| e.duration_ms.div_ceil(1000))
        .fold(target_duration.max(1), u64::max)
}

fn write_playlist(out: &mut String, p: &Playlist<'_>) -> fmt::Result {
    writeln!(out, "#EXTM3U")?;
    // EXT-X-SKIP needs version 9.
    let version = if p.skipped > 0 { 9 } else { VERSION };
    writeln!(out, "#EXT-X-VERSION:{version}")?;
    writeln!(
        out,
        "#EXT-X-TARGETDURATION:{}",
        target_duration_of(p.entries, p.target_duration)
    )?;
    writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", p.media_sequence)?;
    writeln!(
        out,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        p.discontinuity_sequence
    )?;
    match p.kind {
        Kind::Live => {}
        Kind::Event => writeln!(out, "#EXT-X-PLAYLIST-TYPE:EVENT")?,
        Kind::Vod => writeln!(out, "#EXT-X-PLAYLIST-TYPE:VOD")?,
    }
    if let Some(s) = p.can_skip_until {
        writeln!(out, "#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL={s}.0")?;
    }
    // Every segment starts with a keyframe (ffmpeg cuts on keyframes).
    writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS")?;
    let skipped = p.skipped.min(p.entries.len());
    if skipped > 0 {
        writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")?;
    }

    for (i, e) in p.entries.iter().enumerate().skip(skipped) {
        if e.discontinuity {
            writeln!(out, "#EXT-X-DISCONTINUITY")?;
        }
        if i == skipped || e.discontinuity {
            writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                program_date_time(e.start_ms)
            )?;
        }
        writeln!(
            out,
            "#EXTINF:{}.{:03},",
            e.duration_ms / 1000,
            e.duration_ms % 1000
        )?;
        writeln!(out, "{}", e.uri)?;
    }

    if p.kind == Kind::Vod {
        writeln!(out, "#EXT-X-ENDLIST")?;
    }
    Ok(())
}

/// `start_ms` as ISO 8601 UTC with milliseconds, e.g. `2026-11-21T16:05:02.123Z`. Times outside chrono's
/// range (hundreds of thousands of years away) are clamped to it rather than failing the whole playlist.
fn program_date_time(start_ms: i64) -> impl fmt::Display {
    let t = DateTime::<Utc>::from_timestamp_millis(start_ms).unwrap_or(if start_ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ")
}

#[cfg(test)]
mod tests {
    use super::*;

    use m3u8_rs::{MediaPlaylist, MediaPlaylistType};
    use proptest::prelude::*;

    /// 2026-11-21T16:05:00.000Z
    const BASE_MS: i64 = 1_795_277_100_000;

    /// A recorded segment in the test model: sessions decide the joins.
    #[derive(Debug, Clone)]
    struct Rec {
        uri: String,
        session: String,
        start_ms: i64,
        duration_ms: u64,
    }

    fn entry(uri: &str, session: &str, start_ms: i64, duration_ms: u64) -> Rec {
        Rec {
            uri: uri.to_owned(),
            session: session.to_owned(),
            start_ms,
            duration_ms,
        }
    }

    /// A rendered window: owns its entries.
    struct Win {
        kind: Kind,
        target: u64,
        media_sequence: u64,
        dsn: u64,
        entries: Vec<Entry>,
    }

    impl Win {
        fn render(&self) -> String {
            render(&Playlist {
                kind: self.kind,
                target_duration: self.target,
                media_sequence: self.media_sequence,
                discontinuity_sequence: self.dsn,
                entries: &self.entries,
                can_skip_until: None,
                skipped: 0,
            })
        }
    }

    /// Entries for `all[k..end]`; a join is a session change from the previous record (for the first entry:
    /// from `all[k - 1]` when `with_prev`).
    fn entries_of(all: &[Rec], k: usize, end: usize, with_prev: bool) -> Vec<Entry> {
        (k..end)
            .map(|j| Entry {
                uri: all[j].uri.clone(),
                start_ms: all[j].start_ms,
                duration_ms: all[j].duration_ms,
                discontinuity: j > 0
                    && (j > k || with_prev)
                    && all[j].session != all[j - 1].session,
            })
            .collect()
    }

    /// Counters for a window starting at index k of `all`: (media_sequence, discontinuity_sequence,
    /// prev_session), the reference the catalog's stored counters must agree with.
    fn counters_at(all: &[Rec], k: usize) -> (u64, u64, Option<&str>) {
        let k = k.min(all.len());
        let boundaries = all[..k]
            .windows(2)
            .filter(|w| w[0].session != w[1].session)
            .count();
        let prev_session = k.checked_sub(1).map(|i| all[i].session.as_str());
        (k as u64, boundaries as u64, prev_session)
    }

    /// A standalone playlist of `recs` (VOD-like: its own numbering, no join on the first entry).
    fn standalone(kind: Kind, recs: &[Rec], target: u64) -> Win {
        Win {
            kind,
            target,
            media_sequence: 0,
            dsn: 0,
            entries: entries_of(recs, 0, recs.len(), false),
        }
    }

    /// The live playlist of the last `window` records of `all`, TARGETDURATION covering all of `all`.
    fn live_from_all(all: &[Rec], window: usize, target: u64) -> String {
        let k = all.len().saturating_sub(window);
        let mut w = playlist(Kind::Live, all, k, all.len(), target);
        w.target = target_duration_of(&entries_of(all, 0, all.len(), false), target);
        w.render()
    }

    /// Sessions A (3 segments) then B (2 segments), B starting a minute after A ended.
    fn two_sessions() -> Vec<Rec> {
        vec![
            entry("A/0.ts", "A", BASE_MS, 2000),
            entry("A/1.ts", "A", BASE_MS + 2000, 2000),
            entry("A/2.ts", "A", BASE_MS + 4000, 1500),
            entry("B/0.ts", "B", BASE_MS + 62_123, 2000),
            entry("B/1.ts", "B", BASE_MS + 64_123, 1999),
        ]
    }

    fn playlist(kind: Kind, all: &[Rec], k: usize, end: usize, target: u64) -> Win {
        let (media_sequence, dsn, _) = counters_at(all, k);
        Win {
            kind,
            target,
            media_sequence,
            dsn,
            entries: entries_of(all, k, end, true),
        }
    }

    fn parse(text: &str) -> MediaPlaylist {
        match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(m3u8_rs::Playlist::MediaPlaylist(pl)) => pl,
            Ok(m3u8_rs::Playlist::MasterPlaylist(_)) => {
                panic!("parsed as a master playlist:\n{text}")
            }
            Err(e) => panic!("does not parse: {e:?}\n{text}"),
        }
    }

    /// Discontinuity sequence number of every segment as a player computes it: DSN + the number of
    /// EXT-X-DISCONTINUITY tags at or before the segment.
    fn segment_dsns(pl: &MediaPlaylist) -> Vec<u64> {
        let mut dsn = pl.discontinuity_sequence;
        pl.segments
            .iter()
            .map(|s| {
                dsn += u64::from(s.discontinuity);
                dsn
            })
            .collect()
    }

    /// Session boundaries at indices 1..=j of `all`.
    fn boundaries_through(all: &[Rec], j: usize) -> u64 {
        (1..=j)
            .filter(|&i| all[i].session != all[i - 1].session)
            .count() as u64
    }

    #[test]
    fn two_session_live_window_exact() {
        let all = two_sessions();
        let expected = "\
#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:1
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T16:05:02.000Z
#EXTINF:2.000,
A/1.ts
#EXTINF:1.500,
A/2.ts
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T16:06:02.123Z
#EXTINF:2.000,
B/0.ts
#EXTINF:1.999,
B/1.ts
";
        assert_eq!(live_from_all(&all, 4, 2), expected);
        assert_eq!((playlist(Kind::Live, &all, 1, 5, 2)).render(), expected);
    }

    #[test]
    fn window_sliding_past_a_join() {
        // A A | B B B: the join is at index 2.
        let all = [
            entry("a0.ts", "A", BASE_MS, 2000),
            entry("a1.ts", "A", BASE_MS + 2000, 2000),
            entry("b2.ts", "B", BASE_MS + 10_000, 2000),
            entry("b3.ts", "B", BASE_MS + 12_000, 2000),
            entry("b4.ts", "B", BASE_MS + 14_000, 2000),
        ];
        /// One reload of the live playlist, window 2.
        struct Step {
            recorded: usize,
            media_sequence: u64,
            dsn: u64,
            uris: [&'static str; 2],
            /// The URI carrying EXT-X-DISCONTINUITY, if any.
            disc_uri: Option<&'static str>,
        }
        let step = |recorded, media_sequence, dsn, uris, disc_uri| Step {
            recorded,
            media_sequence,
            dsn,
            uris,
            disc_uri,
        };
        let steps = [
            step(2, 0, 0, ["a0.ts", "a1.ts"], None),
            step(3, 1, 0, ["a1.ts", "b2.ts"], Some("b2.ts")),
            // The join segment is the FIRST entry of the window: the tag is still there, DSN still 0.
            step(4, 2, 0, ["b2.ts", "b3.ts"], Some("b2.ts")),
            // The join segment has left the window: its tag is gone and DSN counts it.
            step(5, 3, 1, ["b3.ts", "b4.ts"], None),
        ];
        for Step {
            recorded: n,
            media_sequence,
            dsn,
            uris,
            disc_uri,
        } in steps
        {
            let text = live_from_all(&all[..n], 2, 2);
            let pl = parse(&text);
            assert_eq!(pl.media_sequence, media_sequence, "{text}");
            assert_eq!(pl.discontinuity_sequence, dsn, "{text}");
            let got: Vec<&str> = pl.segments.iter().map(|s| s.uri.as_str()).collect();
            assert_eq!(got, uris, "{text}");
            let got_disc: Vec<&str> = pl
                .segments
                .iter()
                .filter(|s| s.discontinuity)
                .map(|s| s.uri.as_str())
                .collect();
            assert_eq!(got_disc, disc_uri.into_iter().collect::<Vec<_>>(), "{text}");
            assert_eq!(
                text.matches("#EXT-X-DISCONTINUITY\n").count(),
                usize::from(disc_uri.is_some())
            );
            // b2..b4 are in discontinuity sequence 1 and a0, a1 in 0, whatever the window.
            for (s, d) in pl.segments.iter().zip(segment_dsns(&pl)) {
                assert_eq!(d, u64::from(s.uri.starts_with('b')), "{}: {text}", s.uri);
            }
        }
    }

    #[test]
    fn join_as_first_entry_exact() {
        let all = two_sessions();
        let expected = "\
#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:3
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T16:06:02.123Z
#EXTINF:2.000,
B/0.ts
#EXTINF:1.999,
B/1.ts
";
        assert_eq!(live_from_all(&all, 2, 2), expected);
        let expected_after = "\
#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:4
#EXT-X-DISCONTINUITY-SEQUENCE:1
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T16:06:04.123Z
#EXTINF:1.999,
B/1.ts
";
        assert_eq!(live_from_all(&all, 1, 2), expected_after);
    }

    #[test]
    fn event_header() {
        let all = two_sessions();
        let text = standalone(Kind::Event, &all, 2).render();
        assert!(text.starts_with(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-21T16:05:00.000Z\n#EXTINF:2.000,\nA/0.ts\n"
        ));
        assert!(text.ends_with("#EXTINF:1.999,\nB/1.ts\n"));
        assert!(!text.contains("ENDLIST"));
        let pl = parse(&text);
        assert_eq!(pl.playlist_type, Some(MediaPlaylistType::Event));
        assert!(!pl.end_list);
        assert_eq!(pl.segments.len(), 5);
    }

    #[test]
    fn vod_header_and_endlist() {
        let all = two_sessions();
        let text = standalone(Kind::Vod, &all[2..], 2).render();
        let expected = "\
#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T16:05:04.000Z
#EXTINF:1.500,
A/2.ts
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T16:06:02.123Z
#EXTINF:2.000,
B/0.ts
#EXTINF:1.999,
B/1.ts
#EXT-X-ENDLIST
";
        assert_eq!(text, expected);
        let pl = parse(&text);
        assert_eq!(pl.playlist_type, Some(MediaPlaylistType::Vod));
        assert!(pl.end_list);
    }

    #[test]
    fn empty_playlists() {
        let header = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
                      #EXT-X-DISCONTINUITY-SEQUENCE:0\n";
        let empty = |kind| standalone(kind, &[], 2).render();
        assert_eq!(
            empty(Kind::Live),
            format!("{header}#EXT-X-INDEPENDENT-SEGMENTS\n")
        );
        assert_eq!(
            empty(Kind::Event),
            format!("{header}#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-INDEPENDENT-SEGMENTS\n")
        );
        assert_eq!(
            empty(Kind::Vod),
            format!(
                "{header}#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-ENDLIST\n"
            )
        );
        for kind in [Kind::Live, Kind::Event, Kind::Vod] {
            let pl = parse(&empty(kind));
            assert!(pl.segments.is_empty());
            assert_eq!(pl.target_duration, 2);
            assert_eq!(pl.end_list, kind == Kind::Vod);
        }
        assert_eq!(live_from_all(&[], 5, 2), empty(Kind::Live));
        // A zero window after some segments: empty, counters pointing past the last segment.
        let all = two_sessions();
        let text = live_from_all(&all, 0, 2);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert!(parse(&text).segments.is_empty());
    }

    #[test]
    fn target_duration_raised_by_long_first_segment() {
        let all = vec![
            entry("0.ts", "A", BASE_MS, 3930),
            entry("1.ts", "A", BASE_MS + 3930, 2000),
        ];
        let text = live_from_all(&all, 10, 2);
        assert!(text.contains("#EXT-X-TARGETDURATION:4\n"), "{text}");
        assert!(text.contains("#EXTINF:3.930,\n0.ts\n"), "{text}");
        assert_eq!(parse(&text).target_duration, 4);
        // Ceil, not round: 2.001 s needs 3.
        assert_eq!(
            target_duration_of(&entries_of(&[entry("x", "A", 0, 2001)], 0, 1, false), 2),
            3
        );
        // Whole seconds stay as they are; the configured value wins when larger; never 0.
        assert_eq!(
            target_duration_of(&entries_of(&[entry("x", "A", 0, 4000)], 0, 1, false), 2),
            4
        );
        assert_eq!(
            target_duration_of(&entries_of(&[entry("x", "A", 0, 4000)], 0, 1, false), 6),
            6
        );
        assert_eq!(target_duration_of(&[], 0), 1);
    }

    #[test]
    fn live_target_duration_stable_when_long_segment_leaves_window() {
        let all = vec![
            entry("0.ts", "A", BASE_MS, 3930),
            entry("1.ts", "A", BASE_MS + 3930, 2000),
            entry("2.ts", "A", BASE_MS + 5930, 2000),
        ];
        assert!(live_from_all(&all, 2, 2).contains("#EXT-X-TARGETDURATION:4\n"));
        // render() itself only looks at its entries.
        assert!(
            playlist(Kind::Live, &all, 1, 3, 2)
                .render()
                .contains("#EXT-X-TARGETDURATION:2\n")
        );
    }

    #[test]
    fn counters() {
        // A A B B A: boundaries at 2 and 4.
        let all = vec![
            entry("0", "A", 0, 1000),
            entry("1", "A", 1000, 1000),
            entry("2", "B", 2000, 1000),
            entry("3", "B", 3000, 1000),
            entry("4", "A", 4000, 1000),
        ];
        assert_eq!(counters_at(&all, 0), (0, 0, None));
        assert_eq!(counters_at(&all, 1), (1, 0, Some("A")));
        assert_eq!(counters_at(&all, 2), (2, 0, Some("A")));
        assert_eq!(counters_at(&all, 3), (3, 1, Some("B")));
        assert_eq!(counters_at(&all, 4), (4, 1, Some("B")));
        assert_eq!(counters_at(&all, 5), (5, 2, Some("A")));
        assert_eq!(counters_at(&all, 99), (5, 2, Some("A")));
        assert_eq!(counters_at(&[], 0), (0, 0, None));
    }

    #[test]
    fn program_date_time_format() {
        assert_eq!(
            program_date_time(BASE_MS + 2123).to_string(),
            "2026-11-21T16:05:02.123Z"
        );
        assert_eq!(program_date_time(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            program_date_time(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
        // Out of chrono's range: clamped, no panic.
        let _ = program_date_time(i64::MAX).to_string();
        let _ = program_date_time(i64::MIN).to_string();
    }

    /// A camera's segments: `n` entries in up to 6 sessions as contiguous runs, continuous inside a session,
    /// with a gap before each new session.
    fn arb_all() -> impl Strategy<Value = Vec<Rec>> {
        (1usize..60)
            .prop_flat_map(|n| {
                (
                    prop::collection::vec(500u64..8000, n),
                    prop::collection::vec(0i64..600_000, n),
                    prop::sample::subsequence((1..n).collect::<Vec<_>>(), 0..=(n - 1).min(5)),
                    0i64..4_000_000_000_000,
                )
            })
            .prop_map(|(durations, gaps, cuts, base)| {
                let mut session = 0;
                let mut start = base;
                let mut all: Vec<Rec> = Vec::with_capacity(durations.len());
                for (i, (&duration_ms, gap)) in durations.iter().zip(gaps).enumerate() {
                    if i > 0 {
                        start += all[i - 1].duration_ms as i64;
                        if cuts.contains(&i) {
                            session += 1;
                            start += gap;
                        }
                    }
                    let session = format!("{session:x}-ffmpeg");
                    all.push(Rec {
                        uri: format!("cam1/{session}/{i:06}.ts"),
                        session,
                        start_ms: start,
                        duration_ms,
                    });
                }
                all
            })
    }

    /// The tags before each segment's URI line in the raw text: (has EXT-X-DISCONTINUITY, PROGRAM-DATE-TIME
    /// value). m3u8-rs parses both too; the raw text is also checked so that a lenient parse cannot hide a
    /// misplaced tag.
    fn raw_segment_tags(text: &str) -> Vec<(bool, Option<&str>)> {
        let mut out = Vec::new();
        let mut in_segment = false;
        let (mut disc, mut pdt) = (false, None);
        for line in text.lines() {
            if line.starts_with("#EXTINF:") {
                in_segment = true;
            } else if line == "#EXT-X-DISCONTINUITY" {
                disc = true;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                pdt = Some(v);
            } else if !line.starts_with('#') {
                assert!(in_segment, "URI line without EXTINF: {line}");
                out.push((disc, pdt));
                (in_segment, disc, pdt) = (false, false, None);
            }
        }
        out
    }

    /// Checks one rendered window `all[k..end]` of `kind` against every property.
    fn check_window(all: &[Rec], k: usize, end: usize, kind: Kind, target: u64) {
        let p = if kind == Kind::Vod {
            standalone(kind, &all[k..end], target)
        } else {
            playlist(kind, all, k, end, target)
        };
        let text = p.render();
        let entries = &p.entries;
        assert!(text.ends_with('\n') && !text.contains('\r'));

        // 1. It parses as a media playlist, with every segment (the parser silently stops at junk).
        let pl = parse(&text);
        assert_eq!(pl.version, Some(3));
        assert!(pl.independent_segments);
        assert_eq!(pl.segments.len(), entries.len(), "{text}");
        for (s, e) in pl.segments.iter().zip(entries) {
            assert_eq!(s.uri, e.uri);
        }

        // 2. Media sequence of each segment = its index in `all` (VOD starts its own numbering at 0).
        let ms_base = if kind == Kind::Vod { k } else { 0 };
        for j in k..end {
            assert_eq!(pl.media_sequence + (j - k) as u64, (j - ms_base) as u64);
        }

        // 3. Discontinuity sequence number of each segment = boundaries in 1..=j (VOD: k+1..=j).
        let dsn_base = if kind == Kind::Vod {
            boundaries_through(all, k)
        } else {
            0
        };
        for (j, d) in (k..end).zip(segment_dsns(&pl)) {
            assert_eq!(
                d,
                boundaries_through(all, j) - dsn_base,
                "k={k} j={j}\n{text}"
            );
        }

        // 4. Target duration covers every EXTINF (ceil, so also rounded) and the configured value.
        assert!(pl.target_duration >= target);
        for e in entries {
            assert!(pl.target_duration >= e.duration_ms.div_ceil(1000));
        }
        assert_eq!(pl.target_duration, target_duration_of(entries, target));

        // 5. PROGRAM-DATE-TIME on the first segment and on every discontinuity segment, only there.
        let raw = raw_segment_tags(&text);
        assert_eq!(raw.len(), entries.len());
        for (i, ((disc, pdt), s)) in raw.iter().zip(&pl.segments).enumerate() {
            let j = k + i;
            let join =
                (i > 0 || kind != Kind::Vod) && j > 0 && all[j].session != all[j - 1].session;
            assert_eq!(*disc, join, "j={j}\n{text}");
            assert_eq!(s.discontinuity, join);
            assert_eq!(pdt.is_some(), i == 0 || join, "j={j}\n{text}");
            assert_eq!(s.program_date_time.is_some(), pdt.is_some());
            if let Some(v) = pdt {
                assert_eq!(v.len(), "2026-11-21T16:05:02.123Z".len(), "{v}");
                assert!(v.ends_with('Z'));
                let t = DateTime::parse_from_rfc3339(v).expect("PROGRAM-DATE-TIME is RFC 3339");
                assert_eq!(t.timestamp_millis(), all[j].start_ms);
                assert_eq!(
                    s.program_date_time.map(|t| t.timestamp_millis()),
                    Some(all[j].start_ms)
                );
            }
        }

        // 6. EXTINF durations.
        for (s, e) in pl.segments.iter().zip(entries) {
            assert!((f64::from(s.duration) - e.duration_ms as f64 / 1000.0).abs() < 0.0005);
        }

        // 7. Playlist type and ENDLIST.
        let (playlist_type, end_list) = match kind {
            Kind::Live => (None, false),
            Kind::Event => (Some(MediaPlaylistType::Event), false),
            Kind::Vod => (Some(MediaPlaylistType::Vod), true),
        };
        assert_eq!(pl.playlist_type, playlist_type);
        assert_eq!(pl.end_list, end_list);
        assert_eq!(text.contains("#EXT-X-ENDLIST"), end_list);
        assert_eq!(
            text.contains("#EXT-X-PLAYLIST-TYPE"),
            playlist_type.is_some()
        );
    }

    proptest! {
        #[test]
        fn every_window_satisfies_the_properties(
            all in arb_all(),
            window in 1usize..20,
            target in 1u64..6,
        ) {
            for k in 0..all.len() {
                let end = (k + window).min(all.len());
                for kind in [Kind::Live, Kind::Event, Kind::Vod] {
                    check_window(&all, k, end, kind, target);
                }
            }
        }

        #[test]
        fn live_from_all_is_stable_as_segments_arrive(
            all in arb_all(),
            window in 1usize..20,
            target in 1u64..6,
        ) {
            // The camera records one segment after another; a player reloads the live playlist each time.
            let mut dsn_seen: Vec<Option<u64>> = vec![None; all.len()];
            for n in 1..=all.len() {
                let text = live_from_all(&all[..n], window, target);
                let k = n.saturating_sub(window);
                let mut expected = playlist(Kind::Live, &all, k, n, target);
                expected.target = target_duration_of(&entries_of(&all, 0, n, false), target);
                prop_assert_eq!(&text, &expected.render());
                let pl = parse(&text);
                prop_assert_eq!(pl.media_sequence, k as u64);
                prop_assert_eq!(pl.segments.len(), n - k);
                for (j, d) in (k..n).zip(segment_dsns(&pl)) {
                    prop_assert_eq!(d, boundaries_through(&all, j));
                    // The same segment keeps the same discontinuity sequence number in every reload.
                    prop_assert_eq!(*dsn_seen[j].get_or_insert(d), d);
                }
                prop_assert!(pl.target_duration >= target);
            }
        }
    }
}
