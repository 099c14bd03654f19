//! Group commit: one task owns sled's flush (concurrent `flush_async` calls can deadlock in
//! sled 0.34.7). Callers register and wait; each flush answers everyone who registered before
//! it started.

use tokio::sync::{mpsc, oneshot};

use super::StoreError;

type Waiter = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct Flusher {
    requests: mpsc::UnboundedSender<Waiter>,
}

impl Flusher {
    pub fn start(db: sled::Db) -> Flusher {
        let (requests, mut receiver) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut waiters = vec![first];
                while let Ok(next) = receiver.try_recv() {
                    waiters.push(next);
                }
                let db = db.clone();
                let outcome = tokio::task::spawn_blocking(move || db.flush())
                    .await
                    .map_err(|err| err.to_string())
                    .and_then(|flushed| flushed.map(|_| ()).map_err(|err| err.to_string()));
                for waiter in waiters {
                    let _ = waiter.send(outcome.clone());
                }
            }
        });
        Flusher { requests }
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        let (sender, receiver) = oneshot::channel();
        self.requests
            .send(sender)
            .map_err(|_| StoreError::FlusherGone)?;
        receiver
            .await
            .map_err(|_| StoreError::FlusherGone)?
            .map_err(|message| StoreError::Sled(sled::Error::Io(std::io::Error::other(message))))
    }
}
