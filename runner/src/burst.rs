//! Writes in bursts: a message and what is already queued behind it go to a
//! socket with one flush (one `write`), so many small frames — a barrier's
//! release to every waiter on a machine, a batch's acks, a busy shard's
//! events — do not cost a system call and a TCP segment each.

use futures::{Sink, SinkExt};

/// Most messages written with one flush.
pub const BURST: usize = 256;

/// Feeds `first`, then what `more` has ready (at most [`BURST`] in all),
/// and flushes once. Each is one or more messages (a frame split in parts).
pub async fn write<S, M, I>(
    sink: &mut S,
    first: I,
    mut more: impl FnMut() -> Option<I>,
) -> Result<(), S::Error>
where
    S: Sink<M> + Unpin,
    I: IntoIterator<Item = M>,
{
    for message in first {
        sink.feed(message).await?;
    }
    for _ in 1..BURST {
        let Some(next) = more() else { break };
        for message in next {
            sink.feed(message).await?;
        }
    }
    sink.flush().await
}
