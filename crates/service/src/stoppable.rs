//! A node's background task that stops on request (the audit checkpoint task, the job
//! runner): the task gets a receiver that resolves when it should stop, and
//! [`StoppableTask::stop`] asks and waits. Dropping the handle asks too.

use std::future::Future;
use std::time::Duration;

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

    /// Spawns a task that runs `round` every `interval` (the first at once) until asked to
    /// stop, which also cuts a round in flight short. A failing round is logged once, as
    /// `name` failing in `region`, and its recovery once.
    pub(crate) fn spawn_every<Round, E>(
        name: &'static str,
        region: String,
        interval: Duration,
        mut round: impl FnMut() -> Round + Send + 'static,
    ) -> Self
    where
        Round: Future<Output = Result<(), E>> + Send,
        E: std::fmt::Display,
    {
        Self::spawn(name, move |mut stopped| async move {
            // A zero interval would spin; tokio's interval refuses it.
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = ticker.tick() => {}
                }
                let done = tokio::select! {
                    _ = &mut stopped => return,
                    done = round() => done,
                };
                match done {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!(region, "{name} works again");
                    }
                    Ok(()) => {}
                    Err(err) if !failing => {
                        failing = true;
                        tracing::error!(region, "{name} failed, retrying every interval: {err}");
                    }
                    Err(_) => {}
                }
            }
        })
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
