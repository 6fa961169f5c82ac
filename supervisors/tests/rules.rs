//! Every supervision rule, tested under a simulated clock: start/stop order, the three strategies, restart
//! types, restart intensity and escalation, backoff growth, jitter bounds, reset and the immediate restart after a
//! healthy run, panics, shutdown timeouts, dynamic children and nested supervisors.

mod common;

use std::time::Duration;

use common::{Do, Harness, World, ms, secs};
use supervisors::{
    BackoffPolicy, ChildHandle, ChildSpec, ChildState, Clock, Error, Event, EventKind, ExitReason,
    FastRandJitter, Restart, Shutdown, Strategy, SupervisorSpec,
};

fn policy() -> BackoffPolicy {
    BackoffPolicy {
        initial: secs(1),
        max: secs(8),
        factor: 2.0,
        jitter: 0.25,
        reset_after: secs(30),
        immediate_after_healthy: true,
    }
}

fn three(world: &World, strategy: Strategy) -> SupervisorSpec {
    SupervisorSpec::new("root")
        .strategy(strategy)
        .backoff(policy())
        .child(world.worker("a"))
        .child(world.worker("b"))
        .child(world.worker("c"))
}

#[actix_rt::test]
async fn children_start_in_order_and_stop_in_reverse_order() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(three(&world, Strategy::OneForOne));
    h.started("c").await;
    assert_eq!(world.log.take(), ["start a", "start b", "start c"]);
    assert_eq!(root.shutdown().await, ExitReason::Shutdown);
    let log = world.log.take();
    assert_eq!(
        log,
        ["stop c", "drop c", "stop b", "drop b", "stop a", "drop a"]
    );
    let stopped: Vec<String> = h
        .drain()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Stopped {
                child,
                killed: false,
            } => Some(child),
            _ => None,
        })
        .collect();
    assert_eq!(stopped, ["c", "b", "a"]);
}

#[actix_rt::test]
async fn one_for_one_restarts_only_the_failed_child_after_its_delay() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(three(&world, Strategy::OneForOne));
    h.started("c").await;
    world.log.take();
    world.send("b", Do::Fail);
    assert_eq!(h.restarting("b").await, (1, secs(1)));
    h.advance(ms(999)).await;
    assert_eq!(
        world.log.take(),
        ["drop b"],
        "not restarted before the delay"
    );
    h.advance(ms(1)).await;
    assert_eq!(h.started("b").await, 1);
    assert_eq!(world.log.take(), ["start b"], "siblings untouched");
    root.shutdown().await;
}

#[actix_rt::test]
async fn one_for_all_restarts_every_child_in_order() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(three(&world, Strategy::OneForAll));
    h.started("c").await;
    world.log.take();
    world.send("b", Do::Fail);
    h.restarting("b").await;
    h.settle().await;
    assert_eq!(
        world.log.take(),
        ["drop b", "stop c", "drop c", "stop a", "drop a"]
    );
    h.advance(secs(1)).await;
    h.started("c").await;
    assert_eq!(world.log.take(), ["start a", "start b", "start c"]);
    root.shutdown().await;
}

#[actix_rt::test]
async fn rest_for_one_restarts_the_child_and_only_later_siblings() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(three(&world, Strategy::RestForOne));
    h.started("c").await;
    world.log.take();
    world.send("b", Do::Fail);
    h.restarting("b").await;
    h.settle().await;
    assert_eq!(
        world.log.take(),
        ["drop b", "stop c", "drop c"],
        "a keeps running"
    );
    h.advance(secs(1)).await;
    h.started("c").await;
    assert_eq!(world.log.take(), ["start b", "start c"]);
    // The first child failing takes everything down under rest_for_one.
    world.send("a", Do::Fail);
    h.restarting("a").await;
    h.advance(secs(1)).await;
    h.started("c").await;
    assert_eq!(
        world.log.take(),
        [
            "drop a", "stop c", "drop c", "stop b", "drop b", "start a", "start b", "start c"
        ]
    );
    root.shutdown().await;
}

#[actix_rt::test]
async fn rest_for_one_never_starts_a_later_child_before_an_earlier_one() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(three(&world, Strategy::RestForOne));
    h.started("c").await;
    // b fails three times in a row: its delay grows to 4 s; then a fails (delay 1 s).
    for _ in 0..3 {
        world.send("b", Do::Fail);
        h.restarting("b").await;
        let (_, d) = h.restarting("c").await;
        h.advance(d).await;
        h.started("c").await;
    }
    world.send("b", Do::Fail);
    assert_eq!(h.restarting("b").await, (4, secs(8)));
    world.send("a", Do::Fail);
    assert_eq!(h.restarting("a").await, (1, secs(1)));
    world.log.take();
    h.advance(secs(1)).await;
    assert_eq!(
        world.log.take(),
        ["start a", "start b", "start c"],
        "a's restart brings b and c back in order"
    );
    root.shutdown().await;
}

#[actix_rt::test]
async fn backoff_grows_exponentially_is_capped_and_stays_within_jitter_bounds() {
    let mut h = Harness::with_runtime(|r| r.with_jitter(FastRandJitter::with_seed(7)));
    let world = World::default();
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .intensity(100, secs(60))
            .backoff(policy())
            .child(world.worker("a")),
    );
    h.started("a").await;
    let mut delays = Vec::new();
    for n in 1..=6u32 {
        world.send("a", Do::Fail);
        let (attempt, delay) = h.restarting("a").await;
        assert_eq!(attempt, n);
        let (lo, hi) = policy().bounds(n);
        assert!(
            delay >= lo && delay <= hi,
            "attempt {n}: {delay:?} outside [{lo:?}, {hi:?}]"
        );
        h.advance(delay - ms(1)).await;
        assert!(
            !h.drain()
                .iter()
                .any(|e| matches!(e.kind, EventKind::Started { .. })),
            "attempt {n}: started before its delay"
        );
        h.advance(ms(1)).await;
        h.started("a").await;
        delays.push(delay);
    }
    // Base delays 1, 2, 4, 8, 8, 8 s with ±25 % jitter, never above the 8 s cap.
    assert!(delays[3] >= ms(6000) && delays.iter().all(|d| *d <= secs(8)));
    assert!(
        delays.windows(2).take(3).all(|w| w[1] > w[0]),
        "grows: {delays:?}"
    );
    assert!(
        delays
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 3,
        "jittered: {delays:?}"
    );
    root.shutdown().await;
}

/// The next `Started` event of `child`: (generation, when).
async fn started_at(h: &mut Harness, child: &str) -> (u64, std::time::Instant) {
    let e = h
        .expect(
            &format!("{child} started"),
            |e| matches!(&e.kind, EventKind::Started { child: c, .. } if c == child),
        )
        .await;
    match e.kind {
        EventKind::Started { generation, .. } => (generation, e.at),
        _ => unreachable!(),
    }
}

fn healthy_flag(e: &Event) -> bool {
    match e.kind {
        EventKind::Exited { healthy, .. } => healthy,
        _ => panic!("not an exit: {e:?}"),
    }
}

/// Fails `a` (not marked healthy) and lets it restart; returns (attempt, delay), checking it did not restart a
/// millisecond early.
async fn fail_and_restart(h: &mut Harness, world: &World) -> (u32, Duration) {
    world.send("a", Do::Fail);
    let (attempt, delay) = h.restarting("a").await;
    if delay > Duration::ZERO {
        h.advance(delay - ms(1)).await;
        assert!(
            !h.drain()
                .iter()
                .any(|e| matches!(e.kind, EventKind::Started { .. })),
            "attempt {attempt}: started before its {delay:?} delay"
        );
        h.advance(ms(1)).await;
    }
    h.started("a").await;
    (attempt, delay)
}

#[actix_rt::test]
async fn a_run_of_reset_after_resets_the_backoff_and_restarts_at_once() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .backoff(policy())
            .child(world.worker("a")),
    );
    h.started("a").await;
    for expected in [1u64, 2, 4] {
        world.send("a", Do::Fail);
        let (_, d) = h.restarting("a").await;
        assert_eq!(d, secs(expected));
        h.advance(d).await;
        h.started("a").await;
    }
    // Runs 29 s: not yet healthy, the schedule goes on.
    h.advance(secs(29)).await;
    world.send("a", Do::Fail);
    assert!(!healthy_flag(&h.exited("a").await));
    assert_eq!(h.restarting("a").await, (4, secs(8)));
    h.advance(secs(8)).await;
    h.started("a").await;
    // Runs 30 s: healthy; the schedule starts over and the restart is immediate (same simulated instant).
    h.advance(secs(30)).await;
    world.send("a", Do::Fail);
    let exit = h.exited("a").await;
    assert!(healthy_flag(&exit));
    assert_eq!(h.restarting("a").await, (1, Duration::ZERO));
    assert_eq!(started_at(&mut h, "a").await, (5, exit.at));
    // Then backoff for repeated failure: initial, initial * factor.
    assert_eq!(fail_and_restart(&mut h, &world).await, (2, secs(1)));
    assert_eq!(fail_and_restart(&mut h, &world).await, (3, secs(2)));
    root.shutdown().await;
}

#[actix_rt::test]
async fn a_child_that_declared_its_run_healthy_restarts_at_once_then_backs_off_again() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .intensity(100, secs(60))
            .backoff(policy())
            .child(world.worker("a")),
    );
    h.started("a").await;
    // Two quick failures: the schedule has grown to 4 s.
    assert_eq!(fail_and_restart(&mut h, &world).await, (1, secs(1)));
    assert_eq!(fail_and_restart(&mut h, &world).await, (2, secs(2)));
    // This run declares itself healthy after 5 s (far below reset_after = 30 s), then fails.
    h.advance(secs(5)).await;
    world.send("a", Do::Healthy);
    world.send("a", Do::Fail);
    let exit = h.exited("a").await;
    assert!(matches!(
        &exit.kind,
        EventKind::Exited { reason: ExitReason::Failed(m), ran_for, healthy: true, .. }
            if m.contains("told to fail") && *ran_for == secs(5)
    ));
    let restart = h
        .expect("a restarting", |e| {
            matches!(e.kind, EventKind::Restarting { .. })
        })
        .await;
    assert_eq!(
        restart.kind,
        EventKind::Restarting {
            child: "a".into(),
            attempt: 1,
            delay: Duration::ZERO,
            cause: "failed: a was told to fail".into(),
            healthy: true,
        }
    );
    assert_eq!(
        started_at(&mut h, "a").await,
        (3, exit.at),
        "restarted at the same simulated instant"
    );
    // The mark belonged to that run: the next runs are not healthy and back off from `initial` again.
    assert_eq!(fail_and_restart(&mut h, &world).await, (2, secs(1)));
    assert_eq!(fail_and_restart(&mut h, &world).await, (3, secs(2)));
    world.send("a", Do::Fail);
    assert!(!healthy_flag(&h.exited("a").await));
    let restart = h
        .expect("a restarting", |e| {
            matches!(e.kind, EventKind::Restarting { .. })
        })
        .await;
    assert!(
        matches!(
            restart.kind,
            EventKind::Restarting { attempt: 4, delay, healthy: false, .. } if delay == secs(4)
        ),
        "{restart:?}"
    );
    root.shutdown().await;
}

#[actix_rt::test]
async fn without_immediate_after_healthy_a_healthy_run_only_resets_the_backoff() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .intensity(100, secs(60))
            .backoff(BackoffPolicy {
                immediate_after_healthy: false,
                ..policy()
            })
            .child(world.worker("a")),
    );
    h.started("a").await;
    assert_eq!(fail_and_restart(&mut h, &world).await, (1, secs(1)));
    assert_eq!(fail_and_restart(&mut h, &world).await, (2, secs(2)));
    // Declared healthy: the schedule resets, but the restart waits `initial`.
    world.send("a", Do::Healthy);
    world.send("a", Do::Fail);
    assert!(healthy_flag(&h.exited("a").await));
    assert_eq!(h.restarting("a").await, (1, secs(1)));
    h.advance(ms(999)).await;
    assert!(
        !h.drain()
            .iter()
            .any(|e| matches!(e.kind, EventKind::Started { .. }))
    );
    h.advance(ms(1)).await;
    h.started("a").await;
    assert_eq!(fail_and_restart(&mut h, &world).await, (2, secs(2)));
    // Long enough: the same.
    h.advance(secs(30)).await;
    assert_eq!(fail_and_restart(&mut h, &world).await, (1, secs(1)));
    root.shutdown().await;
}

#[actix_rt::test]
async fn a_child_that_declares_itself_healthy_and_exits_in_a_loop_still_escalates() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .intensity(3, secs(10))
            .backoff(policy())
            .child(world.worker("a"))
            .child(world.worker("b")),
    );
    h.started("b").await;
    let t0 = h.clock.now();
    // Three immediate restarts are tolerated, without the clock moving…
    for generation in 1..=3 {
        world.send("a", Do::Healthy);
        world.send("a", Do::Fail);
        assert!(healthy_flag(&h.exited("a").await));
        assert_eq!(h.restarting("a").await, (1, Duration::ZERO));
        assert_eq!(started_at(&mut h, "a").await, (generation, t0));
    }
    // …the fourth exceeds 3 restarts within 10 s: the root stops its children and fails.
    world.send("a", Do::Healthy);
    world.send("a", Do::Fail);
    let e = h
        .expect("escalation", |e| {
            matches!(e.kind, EventKind::Escalated { .. })
        })
        .await;
    assert_eq!(
        e.kind,
        EventKind::Escalated {
            restarts: 4,
            max_restarts: 3,
            within: secs(10)
        }
    );
    assert_eq!(e.at, t0);
    match root.wait().await {
        ExitReason::Failed(m) => assert!(m.contains("restart intensity exceeded"), "{m}"),
        other => panic!("expected failure, got {other:?}"),
    }
    assert_eq!(world.log.count("start a"), 4);
    assert_eq!(world.log.count("stop b"), 1, "the sibling was stopped");
}

#[actix_rt::test]
async fn the_exited_event_says_whether_the_run_was_healthy() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .intensity(100, secs(60))
            .backoff(policy())
            .child(world.worker("a"))
            .child(world.worker("t").restart(Restart::Transient)),
    );
    h.started("t").await;
    // Short, unmarked run: not healthy.
    world.send("a", Do::Fail);
    let e = h.exited("a").await;
    assert_eq!(
        e.kind,
        EventKind::Exited {
            child: "a".into(),
            reason: ExitReason::Failed("a was told to fail".into()),
            ran_for: Duration::ZERO,
            healthy: false,
        }
    );
    h.advance(secs(1)).await;
    h.started("a").await;
    // Marked: healthy, whatever the reason (a panic here).
    h.advance(secs(2)).await;
    world.send("a", Do::Healthy);
    world.send("a", Do::Panic);
    let e = h.exited("a").await;
    assert!(
        matches!(&e.kind, EventKind::Exited { reason: ExitReason::Panicked(_), ran_for, healthy: true, .. } if *ran_for == secs(2)),
        "{e:?}"
    );
    h.started("a").await;
    // Just short of reset_after, unmarked: not healthy; reset_after exactly: healthy.
    h.advance(ms(29_999)).await;
    world.send("a", Do::Fail);
    assert!(!healthy_flag(&h.exited("a").await));
    let (_, d) = h.restarting("a").await;
    h.advance(d).await;
    h.started("a").await;
    h.advance(secs(30)).await;
    world.send("a", Do::Fail);
    assert!(healthy_flag(&h.exited("a").await));
    // A normal exit that is not restarted (transient) still reports it.
    world.send("t", Do::Healthy);
    world.send("t", Do::Finish);
    let e = h.exited("t").await;
    assert!(
        matches!(
            &e.kind,
            EventKind::Exited {
                reason: ExitReason::Normal,
                healthy: true,
                ..
            }
        ),
        "{e:?}"
    );
    root.shutdown().await;
}

#[actix_rt::test]
async fn a_start_that_fails_is_never_a_healthy_run_even_with_reset_after_zero() {
    let mut h = Harness::new();
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .backoff(BackoffPolicy {
                reset_after: Duration::ZERO,
                ..policy()
            })
            .child(ChildSpec::worker("broken", |cx| {
                cx.exit.healthy();
                Err("no such device".to_string())
            })),
    );
    for (attempt, delay) in [(1, secs(1)), (2, secs(2)), (3, secs(4))] {
        assert!(!healthy_flag(&h.exited("broken").await));
        assert_eq!(h.restarting("broken").await, (attempt, delay));
        h.advance(delay).await;
    }
    root.shutdown().await;
}

#[actix_rt::test]
async fn transient_child_is_restarted_after_a_failure_but_not_after_a_normal_exit() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .backoff(policy())
            .child(world.worker("t").restart(Restart::Transient)),
    );
    h.started("t").await;
    world.send("t", Do::Fail);
    h.restarting("t").await;
    h.advance(secs(1)).await;
    h.started("t").await;
    world.send("t", Do::Finish);
    h.expect("t exited normally", |e| {
        matches!(
            &e.kind,
            EventKind::Exited {
                reason: ExitReason::Normal,
                ..
            }
        )
    })
    .await;
    h.advance(secs(60)).await;
    assert!(!h.drain().iter().any(|e| matches!(
        e.kind,
        EventKind::Restarting { .. } | EventKind::Started { .. }
    )));
    let children = root.which_children().await.unwrap();
    assert_eq!(children[0].state, ChildState::Done);
    root.shutdown().await;
}

#[actix_rt::test]
async fn temporary_child_is_never_restarted_and_is_forgotten() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .backoff(policy())
            .child(world.worker("keep"))
            .child(world.worker("tmp").restart(Restart::Temporary)),
    );
    h.started("tmp").await;
    world.send("tmp", Do::Fail);
    h.expect(
        "tmp exited",
        |e| matches!(&e.kind, EventKind::Exited { child, .. } if child == "tmp"),
    )
    .await;
    h.advance(secs(60)).await;
    assert!(
        !h.drain()
            .iter()
            .any(|e| matches!(e.kind, EventKind::Restarting { .. }))
    );
    let ids: Vec<String> = root
        .which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["keep"]);
    root.shutdown().await;
}

#[actix_rt::test]
async fn a_panic_is_an_abnormal_exit_and_the_supervisor_and_siblings_live_on() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(three(&world, Strategy::OneForOne));
    h.started("c").await;
    world.log.take();
    let a_before = world.addrs.get("a");
    world.send("b", Do::Panic);
    let e = h
        .expect(
            "b panicked",
            |e| matches!(&e.kind, EventKind::Exited { child, .. } if child == "b"),
        )
        .await;
    match e.kind {
        EventKind::Exited {
            reason: ExitReason::Panicked(msg),
            ..
        } => assert!(msg.contains("b was told to panic")),
        other => panic!("expected a panic exit, got {other:?}"),
    }
    assert_eq!(h.restarting("b").await.0, 1);
    h.advance(secs(1)).await;
    h.started("b").await;
    assert!(a_before.connected(), "sibling a still runs");
    assert_eq!(world.log.take(), ["drop b", "start b"]);
    root.shutdown().await;
}

#[actix_rt::test]
async fn a_child_that_ignores_stop_is_killed_after_its_shutdown_timeout() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .child(world.worker("polite"))
            .child(
                world
                    .stubborn("stubborn")
                    .shutdown(Shutdown::Timeout(secs(5))),
            ),
    );
    h.started("stubborn").await;
    world.log.take();
    let stop = actix_rt::spawn({
        let root = root.clone();
        async move { root.shutdown().await }
    });
    h.advance(ms(4999)).await;
    assert!(
        world.log.take().is_empty(),
        "still waiting for the stubborn child"
    );
    h.advance(ms(1)).await;
    let e = h
        .expect(
            "stubborn stopped",
            |e| matches!(&e.kind, EventKind::Stopped { child, .. } if child == "stubborn"),
        )
        .await;
    assert_eq!(
        e.kind,
        EventKind::Stopped {
            child: "stubborn".into(),
            killed: true
        }
    );
    assert_eq!(stop.await.unwrap(), ExitReason::Shutdown);
    assert_eq!(
        world.log.take(),
        ["drop stubborn", "stop polite", "drop polite"]
    );
}

#[actix_rt::test]
async fn more_restarts_than_the_intensity_allows_escalates_to_the_parent() {
    let mut h = Harness::new();
    let world = World::default();
    let fast = BackoffPolicy {
        initial: ms(100),
        factor: 1.0,
        ..policy()
    };
    let inner = SupervisorSpec::new("inner")
        .intensity(3, secs(10))
        .backoff(fast)
        .child(world.worker("x"))
        .child(world.worker("y"));
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .backoff(policy())
            .child(world.worker("sibling"))
            .child(ChildSpec::supervisor(inner)),
    );
    h.started("y").await;
    // Three restarts within 10 s are tolerated…
    for _ in 0..3 {
        world.send("x", Do::Fail);
        assert_eq!(h.restarting("x").await.1, ms(100));
        h.advance(ms(100)).await;
        h.started("x").await;
    }
    world.log.take();
    // …the fourth escalates: inner stops y (x has already ended) and fails; root restarts inner.
    world.send("x", Do::Fail);
    let e = h
        .expect("escalation", |e| {
            matches!(e.kind, EventKind::Escalated { .. })
        })
        .await;
    assert_eq!(e.supervisor, "root/inner");
    assert_eq!(
        e.kind,
        EventKind::Escalated {
            restarts: 4,
            max_restarts: 3,
            within: secs(10)
        }
    );
    let exit = h
        .expect(
            "inner exits",
            |e| matches!(&e.kind, EventKind::Exited { child, .. } if child == "inner"),
        )
        .await;
    assert!(
        matches!(exit.kind, EventKind::Exited { reason: ExitReason::Failed(ref m), .. } if m.contains("restart intensity"))
    );
    assert_eq!(world.log.take(), ["drop x", "stop y", "drop y"]);
    assert_eq!(h.restarting("inner").await, (1, secs(1)));
    h.advance(secs(1)).await;
    h.started("y").await;
    assert_eq!(world.log.take(), ["start x", "start y"]);
    assert!(
        world.addrs.get("sibling").connected(),
        "root's other child is untouched"
    );

    // Restarts that are spread out do not escalate: the window slides.
    for _ in 0..6 {
        world.send("x", Do::Fail);
        h.restarting("x").await;
        h.advance(secs(4)).await;
        h.started("x").await;
    }
    assert!(
        !h.drain()
            .iter()
            .any(|e| matches!(e.kind, EventKind::Escalated { .. }))
    );
    root.shutdown().await;
}

#[actix_rt::test]
async fn escalation_at_the_root_ends_the_tree_with_a_failure() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .intensity(1, secs(60))
            .backoff(policy())
            .child(world.worker("a"))
            .child(world.worker("b")),
    );
    h.started("b").await;
    world.send("a", Do::Fail);
    h.restarting("a").await;
    h.advance(secs(1)).await;
    h.started("a").await;
    world.send("a", Do::Fail);
    match root.wait().await {
        ExitReason::Failed(m) => assert!(m.contains("restart intensity exceeded"), "{m}"),
        other => panic!("expected failure, got {other:?}"),
    }
    assert_eq!(world.log.count("drop b"), 1, "children were stopped");
    assert!(matches!(
        root.which_children().await,
        Err(Error::Stopped(_))
    ));
}

#[actix_rt::test]
async fn a_child_that_cannot_start_is_retried_with_backoff() {
    let mut h = Harness::new();
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let t = tries.clone();
    let world = World::default();
    let w = world.clone();
    let flaky = ChildSpec::worker("flaky", move |cx| {
        if t.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            return Err("port 8000 in use".to_string());
        }
        let spec_ok = w.worker("flaky");
        drop(spec_ok);
        let (h, _addr) = ChildHandle::actor(cx, NoopActor);
        Ok(h)
    });
    let root = h
        .runtime
        .start(SupervisorSpec::new("root").backoff(policy()).child(flaky));
    let e = h
        .expect("start failure", |e| {
            matches!(e.kind, EventKind::Exited { .. })
        })
        .await;
    assert!(
        matches!(e.kind, EventKind::Exited { reason: ExitReason::Failed(ref m), .. } if m.contains("port 8000 in use"))
    );
    assert_eq!(h.restarting("flaky").await, (1, secs(1)));
    h.advance(secs(1)).await;
    assert_eq!(h.restarting("flaky").await, (2, secs(2)));
    h.advance(secs(2)).await;
    assert_eq!(h.started("flaky").await, 2);
    root.shutdown().await;
}

struct NoopActor;
impl actix::Actor for NoopActor {
    type Context = actix::Context<Self>;
}
impl actix::Handler<supervisors::Terminate> for NoopActor {
    type Result = ();
    fn handle(&mut self, _: supervisors::Terminate, ctx: &mut actix::Context<Self>) {
        use actix::ActorContext;
        ctx.stop();
    }
}

#[actix_rt::test]
async fn children_can_be_added_and_removed_at_run_time() {
    let mut h = Harness::new();
    let world = World::default();
    let root = h
        .runtime
        .start(
            SupervisorSpec::new("root")
                .backoff(policy())
                .child(ChildSpec::supervisor(
                    SupervisorSpec::new("cameras").dynamic_children("one per camera"),
                )),
        );
    h.started("cameras").await;
    let cameras = root.supervisor("cameras").await.unwrap();
    assert_eq!(cameras.path(), "root/cameras");
    cameras.add_child(world.worker("cam1")).await.unwrap();
    cameras.add_child(world.worker("cam2")).await.unwrap();
    assert_eq!(
        cameras.add_child(world.worker("cam1")).await,
        Err(Error::DuplicateChild("cam1".into()))
    );
    h.started("cam2").await;
    // Dynamic children are supervised like static ones.
    world.send("cam1", Do::Fail);
    h.restarting("cam1").await;
    h.advance(secs(1)).await;
    h.started("cam1").await;
    world.log.take();
    cameras.remove_child("cam1").await.unwrap();
    assert_eq!(world.log.take(), ["stop cam1", "drop cam1"]);
    assert_eq!(
        cameras.remove_child("cam1").await,
        Err(Error::NoSuchChild("cam1".into()))
    );
    let ids: Vec<String> = cameras
        .which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["cam2"]);
    assert_eq!(
        root.supervisor("nope").await.unwrap_err(),
        Error::NoSuchChild("nope".into())
    );
    root.shutdown().await;
    assert_eq!(world.log.take(), ["stop cam2", "drop cam2"]);
}

#[actix_rt::test]
async fn killing_a_nested_supervisor_takes_its_children_with_it() {
    let mut h = Harness::new();
    let world = World::default();
    let inner = SupervisorSpec::new("inner").child(world.stubborn("w"));
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .backoff(policy())
            .child(ChildSpec::supervisor(inner).shutdown(Shutdown::Kill)),
    );
    h.started("w").await;
    world.log.take();
    assert_eq!(root.shutdown().await, ExitReason::Shutdown);
    h.settle().await;
    assert_eq!(
        world.log.take(),
        ["drop w"],
        "the grandchild was dropped, not left running"
    );
    assert!(!world.addrs.get("w").connected());
}

#[actix_rt::test]
async fn the_declared_tree_renders_with_strategies_and_restart_types() {
    let world = World::default();
    let spec = SupervisorSpec::new("root")
        .child(ChildSpec::supervisor(
            SupervisorSpec::new("services").child(world.worker("web").about("HTTP server")),
        ))
        .child(ChildSpec::supervisor(
            SupervisorSpec::new("cameras")
                .intensity(50, secs(60))
                .dynamic_children("one camera supervisor per camera"),
        ));
    let text = spec.render_tree();
    let expected = "\
root  [supervisor, one_for_one, at most 10 restarts in 60 s]
├── services  [supervisor, one_for_one, at most 10 restarts in 60 s, permanent]
│   └── web  [worker, permanent]: HTTP server
└── cameras  [supervisor, one_for_one, at most 50 restarts in 60 s, permanent]
    └── …  (added at run time: one camera supervisor per camera)
";
    assert_eq!(text, expected);
    let _ = Duration::ZERO;
}

#[actix_rt::test]
async fn a_passing_readiness_probe_cuts_a_long_backoff_short() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let mut h = Harness::new();
    let world = World::default();
    let ready = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicU32::new(0));
    let (r, p) = (ready.clone(), probes.clone());
    let child = world.worker("cam").probe(secs(1), move || {
        let (r, p) = (r.clone(), p.clone());
        async move {
            p.fetch_add(1, Ordering::SeqCst);
            r.load(Ordering::SeqCst)
        }
    });
    let root = h.runtime.start(
        SupervisorSpec::new("root")
            .strategy(Strategy::RestForOne)
            .intensity(100, secs(60))
            .backoff(policy())
            .child(child)
            .child(world.worker("follower")),
    );
    h.started("follower").await;
    // A 1 s wait is too short to probe; it just waits.
    world.send("cam", Do::Fail);
    assert_eq!(h.restarting("cam").await, (1, secs(1)));
    h.advance(secs(1)).await;
    h.started("follower").await;
    assert_eq!(probes.load(Ordering::SeqCst), 0);
    // Outage: the delay grows to 8 s; the probe runs every second and fails…
    for _ in 0..2 {
        world.send("cam", Do::Fail);
        let (_, d) = h.restarting("cam").await;
        for _ in 0..d.as_secs() {
            h.advance(secs(1)).await;
        }
        h.started("follower").await;
    }
    world.send("cam", Do::Fail);
    assert_eq!(h.restarting("cam").await, (4, secs(8)));
    let before = probes.load(Ordering::SeqCst);
    h.advance(secs(1)).await;
    h.advance(secs(1)).await;
    assert_eq!(
        probes.load(Ordering::SeqCst),
        before + 2,
        "probed every second"
    );
    assert!(
        !h.drain()
            .iter()
            .any(|e| matches!(e.kind, EventKind::Started { .. }))
    );
    // …until the dependency is back: the child and the sibling waiting with it restart at the next probe.
    ready.store(true, Ordering::SeqCst);
    world.log.take();
    h.advance(secs(1)).await;
    let e = h
        .expect("probe passed", |e| {
            matches!(e.kind, EventKind::Probed { .. })
        })
        .await;
    assert_eq!(
        e.kind,
        EventKind::Probed {
            child: "cam".into(),
            saved: secs(5)
        }
    );
    h.started("follower").await;
    assert_eq!(world.log.take(), ["start cam", "start follower"]);
    root.shutdown().await;
}
