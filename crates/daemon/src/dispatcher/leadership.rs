//! Which node pushes each connection when several daemons share one PostgreSQL store.
//!
//! Every node accepts edits for every connection, but only one node at a time pushes a
//! connection: its leader. So the adapter's own pacing, daily budget reserve and token
//! refresh, which work within one process, are the connection's across nodes too, with no
//! request-by-request coordination through the database.
//!
//! A leadership is a PostgreSQL advisory lock (keyed by the store's schema and the
//! connection's name) held by the node's session, a connection of its own outside the pool
//! ([`NodeSession`]). It lasts exactly as long as that session: a node that stops, crashes or
//! loses the database loses its leaderships with it, and the next look of another node takes
//! them over. A node looks every [`TICK`]: it counts the daemons' sessions, takes free
//! leaderships up to its share (the connections divided by the daemons, rounded up), and hands
//! one on when it holds more than its share — after finishing the pushes it has in flight —
//! so that connections spread over the nodes as nodes come and go. The session also LISTENs
//! for queue notifications and wakes the connection's dispatcher.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::connections::{Connection, Connections, Pause};
use crate::store::{NodeSession, Store, StoreError, now_ms};

/// Where each connection's leader reports its state in the store: `leader/CONNECTION`.
const REPORT_PREFIX: &str = "leader/";

/// What the leader of a connection says of it, every [`TICK`], for `status` run anywhere.
#[derive(Debug, Serialize, Deserialize)]
pub struct LeaderReport {
    /// The leading node (host, pid, start).
    pub node: String,
    /// When it said so (ms since the epoch): a report much older than a tick is of a leader
    /// that stopped.
    pub at_ms: u64,
    pub pause: Option<Pause>,
    pub api_usage: Option<UsageReport>,
}

/// The CRM's count of calls against its budget, as the leader last read it.
#[derive(Debug, Serialize, Deserialize)]
pub struct UsageReport {
    pub used: u64,
    pub limit: u64,
}

/// Adds what the connections' leaders report to `status` (on a shared store, where no one
/// daemon knows every connection's state): per connection its `leader` (node and when it last
/// reported), its `pauses` and the CRM's `api_usage`, as a daemon's own status shows them. A
/// report older than a few ticks is of a leader that stopped: the connection has none.
pub async fn add_reports(
    store: &Store,
    status: &mut crate::ops::StatusReport,
) -> Result<(), StoreError> {
    let fresh_after = now_ms().saturating_sub(5 * TICK.as_millis() as u64);
    for (key, value) in store.meta_under(REPORT_PREFIX).await? {
        let Ok(report) = serde_json::from_str::<LeaderReport>(&value) else {
            continue;
        };
        if report.at_ms < fresh_after {
            continue;
        }
        let name = key[REPORT_PREFIX.len()..].to_string();
        if let Some(pause) = &report.pause {
            status
                .pauses
                .insert(name.clone(), crate::ops::PauseView::new(pause));
        }
        if let Some(usage) = &report.api_usage {
            let view = crate::ops::ApiUsageView {
                used: usage.used,
                limit: usage.limit,
            };
            status.api_usage.insert(name.clone(), view);
        }
        let leader = crate::ops::LeaderView {
            node: report.node,
            reported_at: crate::timefmt::rfc3339(report.at_ms),
        };
        status.leaders.insert(name, leader);
    }
    Ok(())
}

/// Reports the state of every connection this node leads.
async fn report(
    store: &Store,
    wakes: &BTreeMap<String, Arc<Connection>>,
    seats: &BTreeMap<String, Arc<Seat>>,
) {
    for (name, seat) in seats {
        let Some(connection) = wakes.get(name).filter(|_| seat.role() == Role::Lead) else {
            continue;
        };
        let report = LeaderReport {
            node: store.node_id().to_string(),
            at_ms: now_ms(),
            pause: connection.pause(),
            api_usage: connection.adapter().api_usage().map(|usage| UsageReport {
                used: usage.used,
                limit: usage.limit,
            }),
        };
        let value = serde_json::to_string(&report).expect("a report serialises");
        if let Err(error) = store
            .put_meta(&format!("{REPORT_PREFIX}{name}"), &value)
            .await
        {
            tracing::warn!(connection = %name, %error, "reporting the connection's state failed");
        }
    }
}

/// How often a node looks at its leaderships and its session.
const TICK: Duration = Duration::from_secs(1);

/// What this node does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Another node (or none yet) pushes the connection; this one only accepts its edits.
    Follow,
    /// This node pushes the connection.
    Lead,
    /// This node is handing the connection on: it claims nothing more, finishes the pushes
    /// it has in flight, and then gives the leadership up.
    HandOff,
}

/// One connection's place in the leadership: the role the leadership task gives this node,
/// and whether the connection's dispatcher is still serving a term (pushes in flight
/// included), which a hand-off waits for.
pub struct Seat {
    pub role: watch::Sender<Role>,
    pub serving: watch::Sender<bool>,
}

impl Seat {
    pub fn new(role: Role) -> Seat {
        Seat {
            role: watch::Sender::new(role),
            serving: watch::Sender::new(false),
        }
    }

    fn role(&self) -> Role {
        *self.role.borrow()
    }
}

/// The leadership task of a node on a shared store.
pub struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn start(
        store: &Store,
        connections: &Connections,
        seats: BTreeMap<String, Arc<Seat>>,
        member: bool,
    ) -> Running {
        let (stop, stopped) = watch::channel(false);
        let wakes: BTreeMap<String, Arc<Connection>> = connections
            .iter()
            .map(|connection| (connection.name().to_string(), connection.clone()))
            .collect();
        let task = tokio::spawn(lead(store.clone(), Arc::new(wakes), seats, member, stopped));
        Running { stop, task }
    }

    /// Ends the node's session, and with it every leadership it holds. Called once the
    /// dispatchers have finished their pushes.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn lead(
    store: Store,
    wakes: Arc<BTreeMap<String, Arc<Connection>>>,
    seats: BTreeMap<String, Arc<Seat>>,
    member: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut session: Option<NodeSession> = None;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let tick = tokio::select! {
            _ = ticks.tick() => true,
            _ = pause_changed(&wakes) => false,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        if !tick {
            report(&store, &wakes, &seats).await;
            continue;
        }
        if session.as_ref().is_some_and(NodeSession::is_closed) {
            lose_all(&seats, "the node's session to the database ended");
            session = None;
        }
        if session.is_none() {
            session = open_session(&store, &wakes, member).await;
        }
        let Some(current) = &session else {
            continue;
        };
        // A look that does not come back within a few ticks means the session is as good
        // as gone: another node may take the leaderships over meanwhile.
        match tokio::time::timeout(3 * TICK, balance(current, &seats, member)).await {
            Ok(Ok(())) => report(&store, &wakes, &seats).await,
            Ok(Err(error)) => {
                tracing::warn!(%error, "the node session failed");
                lose_all(&seats, "the node's session to the database failed");
                session = None;
            }
            Err(_) => {
                lose_all(&seats, "the node's session to the database does not answer");
                session = None;
            }
        }
    }
}

/// Waits until the pause of any connection begins or ends.
async fn pause_changed(connections: &BTreeMap<String, Arc<Connection>>) {
    let mut changes: Vec<_> = connections
        .values()
        .map(|connection| Box::pin(connection.pause_changed.notified()))
        .collect();
    std::future::poll_fn(|cx| {
        for change in &mut changes {
            if change.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Opens the node's session; every connection looks at its queue once it is open, for what
/// was queued while no session listened.
async fn open_session(
    store: &Store,
    wakes: &Arc<BTreeMap<String, Arc<Connection>>>,
    member: bool,
) -> Option<NodeSession> {
    let notified = {
        let wakes = wakes.clone();
        move |name: &str| {
            if let Some(connection) = wakes.get(name) {
                connection.wake.notify_one();
            }
        }
    };
    match store.node_session(member, notified).await? {
        Ok(session) => {
            for connection in wakes.values() {
                connection.wake.notify_one();
            }
            Some(session)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot open the node session to the database; trying again");
            None
        }
    }
}

/// Every leadership ends at once: the session that held them is gone.
fn lose_all(seats: &BTreeMap<String, Arc<Seat>>, why: &str) {
    for (name, seat) in seats {
        if seat.role() != Role::Follow {
            tracing::warn!(connection = %name, reason = why, "leadership lost");
            seat.role.send_replace(Role::Follow);
        }
    }
}

/// One look: finishes hand-offs whose pushes are done, hands one connection on when this
/// node leads more than its share, and takes free leaderships up to its share.
async fn balance(
    session: &NodeSession,
    seats: &BTreeMap<String, Arc<Seat>>,
    member: bool,
) -> Result<(), StoreError> {
    // A one-shot command leads whatever no daemon leads, and gives nothing up.
    let share = match member {
        true => seats.len().div_ceil(session.members().await?.max(1)),
        false => seats.len(),
    };
    for (name, seat) in seats {
        if seat.role() == Role::HandOff && !*seat.serving.borrow() {
            session.resign(name).await?;
            seat.role.send_replace(Role::Follow);
            tracing::info!(connection = %name, "leadership handed on");
        }
    }
    let held = |role: Role| seats.values().filter(|seat| seat.role() == role).count();
    let mut leading = held(Role::Lead) + held(Role::HandOff);
    if member
        && leading > share
        && held(Role::HandOff) == 0
        && let Some((name, seat)) = seats
            .iter()
            .rev()
            .find(|(_, seat)| seat.role() == Role::Lead)
    {
        tracing::info!(connection = %name, share, "this node leads more than its share: handing the connection on");
        seat.role.send_replace(Role::HandOff);
    }
    // Nodes start looking at different connections, so that several starting together
    // spread out rather than race for the same one.
    let offset = std::process::id() as usize % seats.len().max(1);
    let order = seats.iter().cycle().skip(offset).take(seats.len());
    for (name, seat) in order {
        if leading >= share {
            break;
        }
        if seat.role() == Role::Follow && session.try_lead(name).await? {
            seat.role.send_replace(Role::Lead);
            leading += 1;
        }
    }
    Ok(())
}
