//! Where requests wait (Kafka's purgatory). An acks=-1 produce waits for
//! the partition's HW to pass its batch ([`Partition::wait_acked`], on the
//! partition's HW watch); a consumer's fetch waits for a local HW to move
//! and a follower's fetch for a leader append, both through [`long_poll`].
//!
//! [`Partition::wait_acked`]: super::Partition::wait_acked

use std::future::Future;

use tokio::sync::watch;
use tokio::time::Instant;

/// Runs `attempt` until it says it is done or `deadline` passes, again
/// each time `wake` signals. Past the deadline it makes one last attempt,
/// so that what arrived while it waited is not missed, and returns that.
pub async fn long_poll<T, F, Fut>(
    deadline: Instant,
    mut wake: watch::Receiver<u64>,
    mut attempt: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (T, bool)>,
{
    loop {
        wake.borrow_and_update();
        let (out, done) = attempt().await;
        if done || Instant::now() >= deadline {
            return out;
        }
        // Woken, or the deadline: either way attempt again.
        let _ = tokio::time::timeout_at(deadline, wake.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn answers_at_once_when_done_wakes_on_a_signal_and_tries_once_more_at_the_deadline() {
        let (tx, rx) = watch::channel(0u64);
        let far = Instant::now() + Duration::from_secs(60);
        let mut calls = 0;
        let out = long_poll(far, rx.clone(), || {
            calls += 1;
            async move { (calls, true) }
        })
        .await;
        assert_eq!(out, 1);

        // Not done until the value is signalled.
        let value = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let v = value.clone();
        let waiter = tokio::spawn(long_poll(far, rx.clone(), move || {
            let n = v.load(std::sync::atomic::Ordering::SeqCst);
            async move { (n, n > 0) }
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        value.store(7, std::sync::atomic::Ordering::SeqCst);
        tx.send_modify(|n| *n += 1);
        assert_eq!(waiter.await.unwrap(), 7);

        // Never done: returns at the deadline after one last attempt.
        let started = Instant::now();
        let mut calls = 0;
        let out = long_poll(started + Duration::from_millis(100), rx, || {
            calls += 1;
            async move { (calls, false) }
        })
        .await;
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(out, 2, "the first attempt and the one at the deadline");
    }
}
