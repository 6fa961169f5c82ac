//! The `control` child and the `vigil ctl` client, on AMQP 0-9-1 (lapin).
//!
//! Topology (declared idempotently by every node and by `vigil ctl`; `<p>` is `[control] prefix`):
//! - `<p>.control`: direct exchange, durable; commands are published there with the target node id as routing key;
//! - `<p>.node.<node_id>`: durable queue of one node, bound to `<p>.control` by its node id, dead-lettering to
//!   `<p>.dlx`;
//! - `<p>.dlx` → `<p>.dead`: fanout exchange and durable queue of refused commands (with RabbitMQ's
//!   `x-death` header saying where they came from);
//! - `<p>.events`: topic exchange, durable; `heartbeat.<node_id>` every `heartbeat_seconds`, and
//!   `job.started.<node_id>` / `job.stopped.<node_id>` when a transcoding job starts or stops.
//!
//! A command is acknowledged only after it was applied (and its outcome stored) or refused: refused ones are
//! rejected without requeue, which dead-letters them. Replies go to the command's `reply_to` with its
//! `correlation_id`. A lost broker is not a failure of the child: it reconnects with capped, jittered
//! exponential backoff and shows the link as down meanwhile (`vigil_link_up{link="amqp"}`).
//!
//! Every call that waits on the broker goes through [`Link::call`]: it fails as soon as the connection is
//! gone or after [`CALL_TIMEOUT`]. lapin can leave a call's future pending for ever when the connection breaks
//! while the call is being sent (seen: an ack right after a reset), and a session stuck there never
//! reconnects.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use supervisors::{
    Backoff, BackoffPolicy, ChildHandle, ChildSpec, Clock, ExitReason, FastRandJitter, Shutdown,
};
use tokio_util::sync::CancellationToken;

use super::command::{self, Key};
use super::{Levers, Reply};
use crate::config::ControlConfig;
use crate::error::{Error, Result};
use crate::metrics::LinkCell;

/// The dead-letter queue keeps at most this many refused commands…
const DEAD_MAX: i64 = 10_000;
/// …for at most this long.
const DEAD_TTL_MS: i64 = 7 * 24 * 3_600_000;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any other call may wait for the broker.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a link looks whether its connection is still up (lapin 4 has no callback for it).
const WATCH_EVERY: Duration = Duration::from_millis(250);

fn amqp_err(op: &'static str, e: impl std::fmt::Display) -> Error {
    // lapin's messages name the host, never the URL's password.
    Error::Control {
        op,
        message: crate::process::redact_url_passwords(&e.to_string()),
    }
}

/// A connection and its channel. Its `lost` token is cancelled as soon as the connection is no longer up, and
/// every call through [`Link::call`] ends then, or after [`CALL_TIMEOUT`], whichever comes first.
pub struct Link {
    conn: Connection,
    ch: Channel,
    lost: CancellationToken,
    _watch: AbortOnDrop,
}

impl Link {
    /// Connect to `url` (naming the connection `name`, as RabbitMQ's connection list shows it; at most
    /// [`CONNECT_TIMEOUT`]) and open a channel.
    pub async fn open(url: &str, name: &str) -> Result<Link> {
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(name.to_string()));
        let conn =
            match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, props)).await {
                Ok(r) => r.map_err(|e| amqp_err("connect", e))?,
                Err(_) => {
                    return Err(amqp_err(
                        "connect",
                        format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    ));
                }
            };
        let lost = CancellationToken::new();
        let watch = {
            let (status, lost) = (conn.status().clone(), lost.clone());
            tokio::spawn(async move {
                while status.connected() {
                    tokio::time::sleep(WATCH_EVERY).await;
                }
                lost.cancel();
            })
        };
        let watch = AbortOnDrop(watch);
        let ch = Self::guarded(&lost, "channel.open", conn.create_channel()).await?;
        Ok(Link {
            conn,
            ch,
            lost,
            _watch: watch,
        })
    }

    /// Await `call`, a lapin call named `op`: its result, or an error once the connection is gone or after
    /// [`CALL_TIMEOUT`].
    pub async fn call<T, E: std::fmt::Display>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = std::result::Result<T, E>>,
    ) -> Result<T> {
        Self::guarded(&self.lost, op, call).await
    }

    async fn guarded<T, E: std::fmt::Display>(
        lost: &CancellationToken,
        op: &'static str,
        call: impl std::future::Future<Output = std::result::Result<T, E>>,
    ) -> Result<T> {
        tokio::select! {
            r = call => r.map_err(|e| amqp_err(op, e)),
            _ = lost.cancelled() => Err(amqp_err(op, "the connection to the broker is gone")),
            _ = tokio::time::sleep(CALL_TIMEOUT) => {
                Err(amqp_err(op, format!("no answer from the broker within {} s", CALL_TIMEOUT.as_secs())))
            }
        }
    }

    /// Declare the durable queue `queue` with `args` and bind it to `exchange` by `key`.
    async fn durable_queue(
        &self,
        queue: &str,
        args: FieldTable,
        exchange: &str,
        key: &str,
    ) -> Result<()> {
        self.call(
            "queue.declare",
            self.ch
                .queue_declare(queue.into(), QueueDeclareOptions::durable(), args),
        )
        .await?;
        self.call(
            "queue.bind",
            self.ch.queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        Ok(())
    }

    /// Cancelled once the connection is no longer up.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Close the connection politely (at most [`CALL_TIMEOUT`]; errors do not matter then).
    pub async fn close(self) {
        let _ = self
            .call("connection.close", self.conn.close(200, "done".into()))
            .await;
    }
}

/// Declare the shared part of the topology (exchanges and the dead-letter queue).
pub async fn declare_shared(link: &Link, c: &ControlConfig) -> Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (name, kind) in [
        (c.exchange(), ExchangeKind::Direct),
        (c.events_exchange(), ExchangeKind::Topic),
        (c.dead_letter_exchange(), ExchangeKind::Fanout),
    ] {
        link.call(
            "exchange.declare",
            link.ch
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default()),
        )
        .await?;
    }
    let dead = c.dead_letter_queue();
    // Bounded: anyone who may publish to the control exchange could fill it otherwise. The newest 10 000
    // refused commands, for a week.
    let mut limits = FieldTable::default();
    limits.insert("x-max-length".into(), AMQPValue::LongLongInt(DEAD_MAX));
    limits.insert("x-message-ttl".into(), AMQPValue::LongLongInt(DEAD_TTL_MS));
    link.durable_queue(&dead, limits, &c.dead_letter_exchange(), "")
        .await
}

/// Declare node `node`'s queue (dead-lettering to `<p>.dlx`) and bind it to `<p>.control`.
pub async fn declare_node_queue(link: &Link, c: &ControlConfig, node: &str) -> Result<String> {
    let queue = c.node_queue(node);
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(c.dead_letter_exchange())),
    );
    link.durable_queue(&queue, args, &c.exchange(), node)
        .await?;
    Ok(queue)
}

/// Aborts a task when dropped (when the session that started it ends).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn json_props() -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        // Persistent: a command or reply survives a broker restart in a durable queue.
        .with_delivery_mode(2)
}

/// The `control` child of `services`.
pub fn child_spec(levers: Arc<Levers>, key: Key, link: Arc<LinkCell>) -> ChildSpec {
    let about = match &levers.config.control {
        Some(c) => format!(
            "control plane: signed commands from queue {} (AMQP), heartbeats on {}",
            c.node_queue(&levers.config.node_id),
            c.events_exchange()
        ),
        None => "control plane".into(),
    };
    ChildSpec::worker("control", move |cx| {
        let stop = CancellationToken::new();
        let run = run(
            levers.clone(),
            key.clone(),
            link.clone(),
            cx.clock(),
            cx.path.clone(),
            cx.exit.clone(),
            stop.clone(),
        );
        Ok(ChildHandle::task(run, move || stop.cancel()))
    })
    .shutdown(Shutdown::Timeout(Duration::from_secs(5)))
    .about(about)
}

async fn run(
    levers: Arc<Levers>,
    key: Key,
    gauge: Arc<LinkCell>,
    clock: Arc<dyn Clock>,
    path: String,
    exit: supervisors::ExitSlot,
    stop: CancellationToken,
) -> ExitReason {
    let Some(config) = levers.config.control.clone() else {
        return ExitReason::Normal;
    };
    let jitter = FastRandJitter::new();
    let mut backoff = Backoff::new(BackoffPolicy {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(30),
        ..BackoffPolicy::default()
    });
    loop {
        let ended = tokio::select! {
            r = session(&levers, &key, &gauge, &config, &path, &exit, &mut backoff) => r,
            _ = stop.cancelled() => {
                gauge.set(false);
                return ExitReason::Normal;
            }
        };
        gauge.set(false);
        let why = match ended {
            Ok(()) => "the broker closed the connection".to_string(),
            Err(e) => e.to_string(),
        };
        let (attempt, delay) = backoff.next_delay(&jitter);
        tracing::warn!(actor = %path, attempt, delay_ms = delay.as_millis() as u64,
            "control plane: {why}; connecting again after the delay (commands wait in the node's queue meanwhile)");
        tokio::select! {
            _ = clock.sleep(delay) => {}
            _ = stop.cancelled() => return ExitReason::Normal,
        }
    }
}

/// One connection's life: declare, consume, answer, heartbeat. Returns when the connection ends.
async fn session(
    levers: &Arc<Levers>,
    key: &Key,
    gauge: &Arc<LinkCell>,
    config: &ControlConfig,
    path: &str,
    exit: &supervisors::ExitSlot,
    backoff: &mut Backoff,
) -> Result<()> {
    let node = levers.config.node_id.clone();
    let link = Link::open(config.amqp_url.expose(), &format!("vigil {node}")).await?;
    link.call(
        "basic.qos",
        link.ch
            .basic_qos(config.prefetch, BasicQosOptions::default()),
    )
    .await?;
    declare_shared(&link, config).await?;
    let queue = declare_node_queue(&link, config, &node).await?;
    let mut consumer = link
        .call(
            "basic.consume",
            link.ch.basic_consume(
                queue.as_str().into(),
                format!("vigil-{node}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    gauge.set(true);
    // The gauge shows the connection itself, also while a command is being applied and nothing reads the
    // consumer: it drops as soon as the connection is gone.
    let _gauge_follows = {
        let (lost, gauge) = (link.lost().clone(), gauge.clone());
        AbortOnDrop(tokio::spawn(async move {
            lost.cancelled().await;
            gauge.set(false);
        }))
    };
    backoff.reset();
    exit.healthy();
    tracing::info!(actor = %path, queue = %queue, "control plane connected; taking commands");
    let events = config.events_exchange();
    let heartbeat_key = format!("heartbeat.{node}");
    let mut beat = tokio::time::interval(Duration::from_secs(u64::from(config.heartbeat_seconds)));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let window_ms = i64::from(config.window_seconds) * 1000;
    loop {
        tokio::select! {
            _ = link.lost().cancelled() => {
                return Err(amqp_err("consume", "the connection to the broker is gone"));
            }
            d = consumer.next() => {
                let delivery = match d {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(amqp_err("consume", e)),
                    None => return Ok(()),
                };
                let now = chrono::Utc::now().timestamp_millis();
                let started = std::time::Instant::now();
                let reply = match command::check(&delivery.data, key, &node, now, window_ms) {
                    Ok(cmd) => {
                        let (id, kind) = (cmd.id.clone(), cmd.kind);
                        // Not stored: no answer and no ack; the broker delivers it again after the reconnect.
                        let reply = levers.apply(cmd).await?;
                        if reply.ok {
                            tracing::info!(actor = %path, command = %id, kind = kind.as_str(), duplicate = reply.duplicate,
                                took_ms = started.elapsed().as_millis() as u64, "command applied: {}", reply.detail);
                            let event = match kind {
                                // Also for a redelivery: its event may not have gone out the first time (consumers
                                // tell repeats apart by the command id).
                                command::Kind::JobStart => Some("job.started"),
                                command::Kind::JobStop => Some("job.stopped"),
                                _ => None,
                            };
                            if let Some(event) = event {
                                let body = serde_json::to_vec(&serde_json::json!({
                                    "type": event,
                                    "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                                    "node": node,
                                    "command": id,
                                    "job": reply.result,
                                    "active_jobs": levers.jobs.len(),
                                })).unwrap_or_default();
                                link.call("basic.publish (event)", link.ch.basic_publish(events.as_str().into(),
                                    format!("{event}.{node}").as_str().into(), BasicPublishOptions::default(), &body,
                                    BasicProperties::default().with_content_type("application/json".into())))
                                    .await?;
                            }
                        } else {
                            tracing::warn!(actor = %path, command = %id, kind = kind.as_str(), duplicate = reply.duplicate,
                                reason = reply.reason.as_deref().unwrap_or(""), "command refused: {}; dead-lettered", reply.detail);
                        }
                        reply
                    }
                    Err((env, refusal)) => {
                        levers.metrics.control_command(refusal.reason.as_str());
                        tracing::warn!(actor = %path, command = env.id.as_deref().unwrap_or("?"),
                            kind = env.kind.as_deref().map(|k| k.chars().take(40).collect::<String>()).unwrap_or_default(),
                            reason = refusal.reason.as_str(), bytes = delivery.data.len(),
                            "command refused: {}; dead-lettered", refusal.detail);
                        super::refused(env.id, node.clone(), &refusal)
                    }
                };
                if let Some(to) = delivery.properties.reply_to().clone() {
                    let mut props = json_props().with_delivery_mode(1);
                    if let Some(c) = delivery.properties.correlation_id().clone() {
                        props = props.with_correlation_id(c);
                    }
                    let body = serde_json::to_vec(&reply).unwrap_or_default();
                    link.call("basic.publish (reply)",
                        link.ch.basic_publish("".into(), to, BasicPublishOptions::default(), &body, props))
                        .await?;
                }
                if reply.ok {
                    link.call("basic.ack", delivery.ack(BasicAckOptions::default())).await?;
                } else {
                    link.call("basic.reject", delivery.reject(BasicRejectOptions { requeue: false })).await?;
                }
            }
            _ = beat.tick() => {
                let status = {
                    let l = levers.clone();
                    tokio::task::spawn_blocking(move || l.status()).await.unwrap_or_default()
                };
                let body = serde_json::to_vec(&serde_json::json!({
                    "type": "heartbeat",
                    "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "status": status,
                })).unwrap_or_default();
                link.call("basic.publish (heartbeat)", link.ch.basic_publish(events.as_str().into(),
                    heartbeat_key.as_str().into(), BasicPublishOptions::default(), &body,
                    BasicProperties::default().with_content_type("application/json".into())))
                    .await?;
            }
        }
    }
}

/// A server-named queue of this connection only (gone with it), optionally bound to `(exchange, key)`, and a
/// consumer of it that acknowledges on delivery.
async fn private_queue(
    link: &Link,
    tag: &str,
    bind: Option<(String, &str)>,
) -> Result<(ShortString, lapin::Consumer)> {
    let q = link
        .call(
            "queue.declare",
            link.ch.queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
    if let Some((exchange, key)) = bind {
        link.call(
            "queue.bind",
            link.ch.queue_bind(
                q.name().clone(),
                exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    }
    let consumer = link
        .call(
            "basic.consume",
            link.ch.basic_consume(
                q.name().clone(),
                tag.into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
    Ok((q.name().clone(), consumer))
}

/// Publish a signed command `body` for `node` and wait up to `within` for its reply (`vigil ctl send`).
pub async fn send(
    config: &ControlConfig,
    node: &str,
    id: &str,
    body: &[u8],
    within: Duration,
) -> Result<Reply> {
    let link = Link::open(config.amqp_url.expose(), "vigil ctl").await?;
    declare_shared(&link, config).await?;
    // The node's queue too: a command sent before the node first connected waits for it there.
    declare_node_queue(&link, config, node).await?;
    let (reply_queue, mut replies) = private_queue(&link, "vigil-ctl", None).await?;
    link.call(
        "basic.publish",
        link.ch.basic_publish(
            config.exchange().as_str().into(),
            node.into(),
            BasicPublishOptions::default(),
            body,
            json_props()
                .with_reply_to(reply_queue)
                .with_correlation_id(id.into())
                // Not delivered after the replay window (it would be refused as stale): the broker dead-letters it.
                .with_expiration(ShortString::from(
                    (u64::from(config.window_seconds) * 1000).to_string(),
                )),
        ),
    )
    .await?;
    let wait = async {
        while let Some(d) = replies.next().await {
            let d = d.map_err(|e| amqp_err("consume (replies)", e))?;
            if d.properties.correlation_id().as_ref().map(|c| c.as_str()) != Some(id) {
                continue;
            }
            return serde_json::from_slice::<Reply>(&d.data)
                .map_err(|e| amqp_err("reply", format!("not a vigil reply: {e}")));
        }
        Err(amqp_err("reply", "the broker closed the reply queue"))
    };
    let r = tokio::time::timeout(within, wait).await.map_err(|_| {
        amqp_err(
            "reply",
            format!(
                "no reply from node {node:?} within {} s (is it running with [control]? the command waits in {} until it is)",
                within.as_secs(),
                config.node_queue(node)
            ),
        )
    })?;
    link.close().await;
    r
}

/// Collect the heartbeats published within `within` (`vigil ctl status`): the newest per node.
pub async fn heartbeats(
    config: &ControlConfig,
    within: Duration,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let link = Link::open(config.amqp_url.expose(), "vigil ctl status").await?;
    declare_shared(&link, config).await?;
    let (_, mut c) = private_queue(
        &link,
        "vigil-ctl-status",
        Some((config.events_exchange(), "heartbeat.*")),
    )
    .await?;
    let mut seen = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, c.next()).await {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&d.data)
            && let Some(node) = v["status"]["node"].as_str()
        {
            seen.insert(node.to_string(), v["status"].clone());
        }
    }
    link.close().await;
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> impl std::future::Future<Output = std::result::Result<(), String>> {
        std::future::pending()
    }

    #[tokio::test]
    async fn a_call_ends_with_an_error_when_the_connection_is_lost_even_if_lapin_never_answers() {
        let lost = CancellationToken::new();
        let call = Link::guarded(&lost, "basic.ack", never());
        let cancel = async {
            tokio::task::yield_now().await;
            lost.cancel();
        };
        let (r, ()) = tokio::join!(call, cancel);
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("basic.ack") && e.contains("the connection to the broker is gone"),
            "{e}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_the_broker_never_answers_ends_after_the_call_timeout() {
        let lost = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let e = Link::guarded(&lost, "queue.declare", never())
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(started.elapsed(), CALL_TIMEOUT);
        assert!(
            e.contains("queue.declare") && e.contains("no answer from the broker within 15 s"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_call_that_answers_gives_its_result_or_its_error() {
        let lost = CancellationToken::new();
        let ok = Link::guarded(&lost, "basic.qos", async { Ok::<_, String>(7) }).await;
        assert_eq!(ok.unwrap(), 7);
        let e = Link::guarded(&lost, "basic.qos", async {
            Err::<(), _>("PRECONDITION_FAILED")
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("basic.qos") && e.contains("PRECONDITION_FAILED"),
            "{e}"
        );
    }
}
