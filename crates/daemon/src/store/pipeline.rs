//! The sled engine's accept pipeline: API edits go to one writer thread, which applies every
//! edit that arrived while the last flush ran as one batch (one transaction over the contacts
//! and the ready queue), flushes once, and answers them all.
//!
//! Why one writer: under many concurrent clients, a transaction per request makes the
//! requests' threads contend on sled's locks and wait on each other's flushes; one writer
//! turns N transactions and N flush registrations into one of each, and the batch grows
//! with the load (the longer a flush takes, the more edits the next batch carries).

use tokio::sync::{mpsc, oneshot};
use unisync_core::ContactPatch;

use super::{Accepted, StoreError};

/// One edit for the writer, and where its answer goes.
pub struct PendingAccept {
    pub id: String,
    pub patch: ContactPatch,
    pub connection: String,
    pub answer: oneshot::Sender<Result<Accepted, StoreError>>,
}

/// The most edits one batch takes: bounds one transaction's size (and its retry, when a
/// dispatcher's claim of the same contact conflicts with it).
pub const MAX_BATCH: usize = 1024;

/// What the writer needs from the engine: apply a batch, make it durable.
pub trait BatchSink: Send + 'static {
    /// Applies the edits in order, in one transaction; answers each edit's own outcome (an
    /// unknown or unreadable contact fails that edit only). `Err` when the batch as a whole
    /// could not be written.
    fn apply(
        &self,
        batch: &[PendingAccept],
    ) -> Result<Vec<Result<Accepted, StoreError>>, StoreError>;

    /// Makes everything applied so far durable (the group commit every caller shares).
    fn flush_blocking(&self) -> Result<(), StoreError>;
}

/// The sending side of the pipeline. The writer thread ends when every clone is dropped.
#[derive(Clone)]
pub struct AcceptPipeline {
    requests: mpsc::UnboundedSender<PendingAccept>,
}

impl AcceptPipeline {
    /// Starts the writer thread over `sink`.
    pub fn start(sink: impl BatchSink) -> AcceptPipeline {
        let (requests, receiver) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("unisync-accept".into())
            .spawn(move || run(sink, receiver))
            .expect("start the accept writer thread");
        AcceptPipeline { requests }
    }

    /// Hands an edit to the writer; answers once it is on disk (or why it is not).
    pub async fn accept(
        &self,
        id: &str,
        patch: &ContactPatch,
        connection: &str,
    ) -> Result<Accepted, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.requests
            .send(PendingAccept {
                id: id.to_string(),
                patch: patch.clone(),
                connection: connection.to_string(),
                answer,
            })
            .map_err(|_| StoreError::FlusherGone)?;
        answered.await.map_err(|_| StoreError::FlusherGone)?
    }
}

fn run(sink: impl BatchSink, mut receiver: mpsc::UnboundedReceiver<PendingAccept>) {
    while let Some(first) = receiver.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let outcomes = sink
            .apply(&batch)
            .and_then(|outcomes| sink.flush_blocking().map(|()| outcomes));
        match outcomes {
            Ok(outcomes) => {
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = pending.answer.send(outcome);
                }
            }
            Err(error) => {
                for pending in batch {
                    let _ = pending.answer.send(Err(same_error(&error)));
                }
            }
        }
    }
}

/// The batch's error again, for each of its edits. A batch fails only as a whole: in sled
/// (its storage error), in a flush (the store failed), or when the flusher is gone.
fn same_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Sled(error) => StoreError::Sled(error.clone()),
        StoreError::FlusherGone => StoreError::FlusherGone,
        StoreError::Failed(message) => StoreError::Failed(message.clone()),
        other => StoreError::Failed(other.to_string()),
    }
}
