//! A shard's inbox: queues from other threads plus the `mio::Waker` that interrupts its
//! poll. Senders wake the shard only when it is parked in `poll`, so a burst of messages
//! costs one wake-up syscall, not one per message.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::Waker;

struct Shared {
    waker: Arc<Waker>,
    parked: AtomicBool,
    /// Counts the wake-up syscalls, if someone wants to know (a metric).
    wakes: Option<Arc<AtomicU64>>,
}

/// The receiving side, owned by the event loop.
pub struct Inbox<T> {
    rx: Receiver<T>,
    shared: Arc<Shared>,
}

/// The sending side; cheap to clone.
pub struct InboxSender<T> {
    tx: Sender<T>,
    shared: Arc<Shared>,
}

impl<T> Clone for InboxSender<T> {
    fn clone(&self) -> Self {
        InboxSender {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// An inbox of `capacity` messages (`None`: unbounded) woken through `waker` (one
/// `Waker` per `Poll` may serve several inboxes).
pub fn inbox<T>(waker: Arc<Waker>, capacity: Option<usize>) -> (InboxSender<T>, Inbox<T>) {
    make(waker, capacity, None)
}

/// `inbox`, counting every wake-up syscall its senders make in `wakes`.
pub fn counted<T>(
    waker: Arc<Waker>,
    capacity: Option<usize>,
    wakes: Arc<AtomicU64>,
) -> (InboxSender<T>, Inbox<T>) {
    make(waker, capacity, Some(wakes))
}

fn make<T>(
    waker: Arc<Waker>,
    capacity: Option<usize>,
    wakes: Option<Arc<AtomicU64>>,
) -> (InboxSender<T>, Inbox<T>) {
    let (tx, rx) = match capacity {
        Some(n) => crossbeam_channel::bounded(n),
        None => crossbeam_channel::unbounded(),
    };
    let shared = Arc::new(Shared {
        waker,
        parked: AtomicBool::new(false),
        wakes,
    });
    (
        InboxSender {
            tx,
            shared: shared.clone(),
        },
        Inbox { rx, shared },
    )
}

impl<T> InboxSender<T> {
    /// Queues `msg` without blocking; gives it back when the inbox is full or closed.
    pub fn send(&self, msg: T) -> Result<(), T> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                let _ = self.wake();
                Ok(())
            }
            Err(TrySendError::Full(m)) | Err(TrySendError::Disconnected(m)) => Err(m),
        }
    }

    /// Queues `msg` without waking the owner; the caller wakes it once after a batch.
    pub fn send_quiet(&self, msg: T) -> Result<(), T> {
        self.tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(m) | TrySendError::Disconnected(m) => m,
        })
    }

    /// Wakes the owner if it is parked; true if it was (one wake-up syscall).
    pub fn wake(&self) -> bool {
        if self.shared.parked.load(Ordering::SeqCst)
            && self.shared.parked.swap(false, Ordering::SeqCst)
        {
            let _ = self.shared.waker.wake();
            if let Some(w) = &self.shared.wakes {
                w.fetch_add(1, Ordering::Relaxed);
            }
            return true;
        }
        false
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// True when a send would be refused.
    pub fn is_full(&self) -> bool {
        self.tx.is_full()
    }

    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

impl<T> Inbox<T> {
    pub fn try_recv(&self) -> Option<T> {
        match self.rx.try_recv() {
            Ok(m) => Some(m),
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => None,
        }
    }

    /// Announces that the owner is about to block in `poll`. Returns false (and stays
    /// unparked) when messages are already waiting, so the owner must not block.
    pub fn park(&self) -> bool {
        self.shared.parked.store(true, Ordering::SeqCst);
        if !self.rx.is_empty() {
            self.shared.parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    pub fn unpark(&self) {
        self.shared.parked.store(false, Ordering::SeqCst);
    }

    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    #[test]
    fn parked_owner_is_woken_once_and_bounded_queue_refuses() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
        let (tx, rx) = inbox::<u32>(waker, Some(2));
        assert!(rx.park());
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(tx.send(3), Err(3));
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(events.iter().count(), 1);
        rx.unpark();
        assert!(!rx.park(), "messages waiting: must not park");
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
    }
}
