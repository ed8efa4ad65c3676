//! Absorbs the wake-ups a task raises against itself while it drives an upstream
//! connection, so that each one costs another round of the connection's polls instead of
//! another poll of the whole serving task.
//!
//! hyper's client passes a request, its response head and the response body between the
//! `SendRequest` handle and the connection's state machine through channels, and each
//! hand-over wakes the other side. [`super::upstream`] polls both sides from the task that
//! serves the client, so each of those wakes scheduled that task again: about two extra
//! polls per forwarded request, each walking the client connection, the router and both
//! hyper state machines for nothing. A [`SelfWake`] is the waker the connection's parts
//! see: a wake raised while its owner is polling them only marks another round; any other
//! wake (the reactor, a timer, another thread) reaches the task as usual.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Rounds of polls one task poll may take. A part that wakes itself on purpose (tokio's
/// cooperative budget makes a resource do so when the task has used its share) would
/// otherwise be polled forever: after this many rounds the task is woken instead.
const MAX_ROUNDS: usize = 4;

/// The waker of one upstream connection's parts (see the module docs).
pub(super) struct SelfWake {
    state: Arc<State>,
    /// A waker over `state`, made once: the parts keep clones of it, and an unchanged
    /// waker is not cloned again when they re-register.
    waker: Waker,
}

struct State {
    /// The owner is polling the parts now.
    polling: AtomicBool,
    /// A part was woken since the owner's current round began.
    woken: AtomicBool,
    /// The waker of the task that polled last: wakes from outside a poll go to it.
    task: Mutex<Option<Waker>>,
}

impl Wake for State {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Paired with `poll`'s stores and loads (all SeqCst): either the owner sees `woken`
        // after its round, or this sees `polling` false and wakes the task.
        self.woken.store(true, SeqCst);
        if !self.polling.load(SeqCst) {
            let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(task) = task.as_ref() {
                task.wake_by_ref();
            }
        }
    }
}

impl SelfWake {
    pub(super) fn new() -> Self {
        let state = Arc::new(State {
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        Self {
            waker: Waker::from(Arc::clone(&state)),
            state,
        }
    }

    /// Polls `parts` with this waker, again at once while they woke themselves during the
    /// round (up to [`MAX_ROUNDS`]), and remembers `cx`'s waker for wakes from outside.
    pub(super) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        mut parts: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        {
            let mut task = self
                .state
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match task.as_mut() {
                Some(task) if task.will_wake(cx.waker()) => {}
                _ => *task = Some(cx.waker().clone()),
            }
        }
        let mut inner = Context::from_waker(&self.waker);
        for _ in 0..MAX_ROUNDS {
            self.state.polling.store(true, SeqCst);
            self.state.woken.store(false, SeqCst);
            let poll = parts(&mut inner);
            self.state.polling.store(false, SeqCst);
            if poll.is_ready() {
                return poll;
            }
            if !self.state.woken.load(SeqCst) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wakes the task receives.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn counting() -> (Arc<CountingWaker>, Waker) {
        let count = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(count))
    }

    #[test]
    fn a_wake_raised_during_the_poll_polls_again_without_waking_the_task() {
        let (count, task) = counting();
        let mut cx = Context::from_waker(&task);
        let wake = SelfWake::new();
        let mut rounds = 0;
        let poll = wake.poll(&mut cx, |cx| {
            rounds += 1;
            if rounds == 1 {
                // A channel hand-over inside the round.
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(rounds)
            }
        });
        assert_eq!(poll, Poll::Ready(2));
        assert_eq!(
            count.0.load(SeqCst),
            0,
            "the task was woken for its own work"
        );
    }

    #[test]
    fn a_wake_from_outside_the_poll_reaches_the_task() {
        let (count, task) = counting();
        let mut cx = Context::from_waker(&task);
        let wake = SelfWake::new();
        let mut kept = None;
        let poll: Poll<()> = wake.poll(&mut cx, |cx| {
            kept = Some(cx.waker().clone());
            Poll::Pending
        });
        assert!(poll.is_pending());
        assert_eq!(count.0.load(SeqCst), 0);
        // The reactor, later, from another thread.
        let kept = kept.expect("the part kept the waker");
        std::thread::spawn(move || kept.wake())
            .join()
            .expect("the waking thread ends");
        assert_eq!(count.0.load(SeqCst), 1);
    }

    #[test]
    fn a_part_that_always_wakes_itself_gives_the_task_back() {
        let (count, task) = counting();
        let mut cx = Context::from_waker(&task);
        let wake = SelfWake::new();
        let mut rounds = 0;
        let poll: Poll<()> = wake.poll(&mut cx, |cx| {
            rounds += 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        assert!(poll.is_pending());
        assert_eq!(rounds, MAX_ROUNDS);
        assert_eq!(count.0.load(SeqCst), 1, "the task must come back to it");
    }

    #[test]
    fn wakes_go_to_the_task_that_polled_last() {
        let (first, first_task) = counting();
        let (second, second_task) = counting();
        let wake = SelfWake::new();
        let mut kept = None;
        let _: Poll<()> = wake.poll(&mut Context::from_waker(&first_task), |cx| {
            kept = Some(cx.waker().clone());
            Poll::Pending
        });
        let _: Poll<()> = wake.poll(&mut Context::from_waker(&second_task), |_| Poll::Pending);
        kept.expect("kept").wake();
        assert_eq!(first.0.load(SeqCst), 0);
        assert_eq!(second.0.load(SeqCst), 1);
    }
}
