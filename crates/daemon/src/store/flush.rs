//! Group commit, and what happens when it fails.
//!
//! One task owns sled's flush (concurrent `flush_async` calls can deadlock in sled 0.34.7).
//! Callers register and wait; each flush answers everyone who registered before it started.
//!
//! A failed flush (disk full, I/O error) is sticky: what was written since the last good
//! flush may or may not be on disk, so from then on the store is [`Health::failure`]d, every
//! flush and every write is refused, and the process is expected to stop and restart from
//! what is durable.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::StoreError;

type Waiter = oneshot::Sender<Result<(), String>>;

/// Whether the store can still make writes durable. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Health {
    failure: Arc<watch::Sender<Option<String>>>,
}

impl Health {
    pub fn new() -> Health {
        Health {
            failure: Arc::new(watch::channel(None).0),
        }
    }

    /// Marks the store failed with `message`; the first failure is the one kept.
    pub fn fail(&self, message: String) {
        self.failure.send_if_modified(|failure| {
            let first = failure.is_none();
            if first {
                tracing::error!(%message, "the store failed: it takes no more writes");
                *failure = Some(message.clone());
            }
            first
        });
    }

    /// The failure, once the store has failed.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Waits until the store fails; answers the failure.
    pub async fn failed(&self) -> String {
        let mut failure = self.failure.subscribe();
        let failed = failure
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives as long as self");
        failed.clone().unwrap_or_default()
    }

    /// `Err(Failed)` once the store has failed.
    pub fn check(&self) -> Result<(), StoreError> {
        match self.failure() {
            Some(message) => Err(StoreError::Failed(message)),
            None => Ok(()),
        }
    }
}

#[derive(Clone)]
pub struct Flusher {
    requests: mpsc::UnboundedSender<Waiter>,
    health: Health,
    /// Test builds only: the next flush fails with this message, as a full disk would.
    #[cfg(test)]
    fault: Arc<std::sync::Mutex<Option<String>>>,
}

impl Flusher {
    pub fn start(db: sled::Db, health: Health) -> Flusher {
        let (requests, mut receiver) = mpsc::unbounded_channel::<Waiter>();
        #[cfg(test)]
        let fault: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let flusher = Flusher {
            requests,
            health: health.clone(),
            #[cfg(test)]
            fault: fault.clone(),
        };
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut waiters = vec![first];
                while let Ok(next) = receiver.try_recv() {
                    waiters.push(next);
                }
                let outcome = match health.failure() {
                    Some(failure) => Err(failure),
                    None => {
                        let db = db.clone();
                        #[cfg(test)]
                        let fault = fault.lock().unwrap().take();
                        let flushed = tokio::task::spawn_blocking(move || {
                            #[cfg(test)]
                            if let Some(message) = fault {
                                return Err(message);
                            }
                            db.flush().map(drop).map_err(|err| err.to_string())
                        })
                        .await
                        .map_err(|err| err.to_string())
                        .and_then(|flushed| flushed);
                        if let Err(message) = &flushed {
                            health.fail(format!("flushing to disk failed: {message}"));
                        }
                        flushed.map_err(|_| health.failure().unwrap_or_default())
                    }
                };
                for waiter in waiters {
                    let _ = waiter.send(outcome.clone());
                }
            }
        });
        flusher
    }

    /// Waits until a flush that began after this call has ended.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let flushed = self.register()?.await;
        flushed
            .map_err(|_| StoreError::FlusherGone)?
            .map_err(StoreError::Failed)
    }

    /// [`Flusher::flush`] from a thread outside the runtime (the accept writer).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let flushed = self.register()?.blocking_recv();
        flushed
            .map_err(|_| StoreError::FlusherGone)?
            .map_err(StoreError::Failed)
    }

    /// Asks for the next flush; the receiver answers when it has ended.
    fn register(&self) -> Result<oneshot::Receiver<Result<(), String>>, StoreError> {
        self.health.check()?;
        let (sender, receiver) = oneshot::channel();
        self.requests
            .send(sender)
            .map_err(|_| StoreError::FlusherGone)?;
        Ok(receiver)
    }

    /// Test builds only: makes the next flush fail with `message`.
    #[cfg(test)]
    pub fn fail_next(&self, message: &str) {
        *self.fault.lock().unwrap() = Some(message.to_string());
    }
}
