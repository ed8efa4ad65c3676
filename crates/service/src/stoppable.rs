//! A node's background task that stops on request (the audit checkpoint task, the job
//! runner): the task gets a receiver that resolves when it should stop, and
//! [`StoppableTask::stop`] asks and waits. Dropping the handle asks too.

use std::future::Future;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running background task. [`StoppableTask::stop`] ends it; dropping it does too.
#[derive(Debug)]
pub struct StoppableTask {
    /// What the task is, for the log if it panicked.
    name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
}

impl StoppableTask {
    /// Spawns `task`, handing it the receiver that resolves (sent or dropped) when it
    /// should stop.
    pub(crate) fn spawn<Task>(
        name: &'static str,
        task: impl FnOnce(oneshot::Receiver<()>) -> Task,
    ) -> Self
    where
        Task: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Self {
            name,
            stop: Some(stop),
            handle: tokio::spawn(task(stopped)),
        }
    }

    /// Asks the task to stop and waits for it to finish what it does on stopping.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let handle = &mut self.handle;
        if let Err(err) = handle.await
            && err.is_panic()
        {
            tracing::error!("{} panicked: {err}", self.name);
        }
    }

    /// Ends the task at once, without letting it do what it does on stopping: as if its
    /// node died.
    pub fn abort(self) {
        self.handle.abort();
    }
}

impl Drop for StoppableTask {
    fn drop(&mut self) {
        // Dropping the sender ends the task at its next wait.
        self.stop.take();
    }
}
