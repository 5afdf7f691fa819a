//! Bytes from an async stream (a request body, a download) to a blocking reader (an import,
//! a load, an unpacking layer), in batches of about a megabyte: one wake-up per batch rather
//! than one per network frame.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

use bytes::Bytes;
use tokio::sync::mpsc;

/// About this many bytes are queued before a batch crosses.
const BATCH: usize = 1 << 20;
/// Batches in flight: enough to keep both sides busy, little enough to bound memory.
const IN_FLIGHT: usize = 8;

/// The async end of [`batch_channel`].
pub struct BatchSender {
    tx: Option<mpsc::Sender<io::Result<Vec<Bytes>>>>,
    batch: Vec<Bytes>,
    batched: usize,
}

/// The blocking end of [`batch_channel`]: reads what has arrived, waiting only when nothing
/// has. The end of the stream is the sender's `finish` (or drop).
pub struct BatchReader {
    rx: mpsc::Receiver<io::Result<Vec<Bytes>>>,
    cur: VecDeque<Bytes>,
    /// An error that arrived behind bytes already handed out; the next read returns it.
    failed: Option<io::Error>,
}

pub fn batch_channel() -> (BatchSender, BatchReader) {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    (
        BatchSender {
            tx: Some(tx),
            batch: Vec::new(),
            batched: 0,
        },
        BatchReader {
            rx,
            cur: VecDeque::new(),
            failed: None,
        },
    )
}

impl BatchSender {
    /// Queues `bytes`. Returns `false` once the reader has gone (it stopped early); later
    /// bytes are dropped.
    pub async fn send(&mut self, bytes: Bytes) -> bool {
        if bytes.is_empty() {
            return self.tx.is_some();
        }
        self.batched += bytes.len();
        self.batch.push(bytes);
        if self.batched >= BATCH {
            self.flush().await;
        }
        self.tx.is_some()
    }

    async fn flush(&mut self) {
        self.batched = 0;
        let batch = std::mem::take(&mut self.batch);
        if let Some(tx) = &self.tx
            && !batch.is_empty()
            && tx.send(Ok(batch)).await.is_err()
        {
            self.tx = None;
        }
    }

    /// Sends what is queued; the reader then sees the end of the stream.
    pub async fn finish(mut self) {
        self.flush().await;
    }

    /// Sends what is queued, then `e`: the reader's next read fails with it.
    pub async fn fail(mut self, e: io::Error) {
        self.flush().await;
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(e)).await;
        }
    }
}

impl BatchReader {
    /// Queues a batch; an error is kept for the read after the queued bytes.
    fn take(&mut self, batch: io::Result<Vec<Bytes>>) {
        match batch {
            Ok(b) => self.cur.extend(b.into_iter().filter(|b| !b.is_empty())),
            Err(e) => self.failed = Some(e),
        }
    }
}

impl Read for BatchReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(batch) => self.take(batch),
            }
        }
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.cur.front_mut() else {
                if self.failed.is_some() {
                    break;
                }
                match self.rx.try_recv() {
                    Ok(batch) => {
                        self.take(batch);
                        continue;
                    }
                    Err(_) => break,
                }
            };
            let k = (buf.len() - n).min(front.len());
            buf[n..n + k].copy_from_slice(&front.split_to(k));
            n += k;
            if front.is_empty() {
                self.cur.pop_front();
            }
        }
        Ok(n)
    }
}

/// Hands out the arrived chunks in place, so a decoder above reads them without a copy.
impl BufRead for BatchReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.cur.is_empty() {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            match self.rx.blocking_recv() {
                None => return Ok(&[]),
                Some(batch) => self.take(batch),
            }
        }
        Ok(self.cur.front().map_or(&[], |b| b.as_ref()))
    }

    fn consume(&mut self, amt: usize) {
        if let Some(front) = self.cur.front_mut() {
            let _ = front.split_to(amt.min(front.len()));
            if front.is_empty() {
                self.cur.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_arrive_whole_and_in_order_then_the_error() {
        let (mut tx, mut rx) = batch_channel();
        let reader = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            let err = rx.read_to_end(&mut all).unwrap_err();
            (all, err.to_string())
        });
        let mut expected = Vec::new();
        for i in 0..3000u32 {
            let chunk: Vec<u8> = (0..(i % 977)).map(|j| (i + j) as u8).collect();
            expected.extend_from_slice(&chunk);
            assert!(tx.send(Bytes::from(chunk)).await);
        }
        tx.fail(io::Error::other("peer went away")).await;
        let (all, err) = reader.await.unwrap();
        assert!(all == expected, "bytes differ");
        assert_eq!(err, "peer went away");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buffered_reads_see_the_same_bytes() {
        let (mut tx, mut rx) = batch_channel();
        let reader = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            loop {
                let buf = rx.fill_buf().unwrap();
                if buf.is_empty() {
                    break;
                }
                let take = buf.len().min(1000);
                all.extend_from_slice(&buf[..take]);
                rx.consume(take);
            }
            all
        });
        let mut expected = Vec::new();
        for i in 0..500u32 {
            let chunk = vec![i as u8; 3001];
            expected.extend_from_slice(&chunk);
            tx.send(Bytes::from(chunk)).await;
        }
        tx.finish().await;
        assert!(reader.await.unwrap() == expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_stops_early_does_not_block_the_sender() {
        let (mut tx, rx) = batch_channel();
        drop(rx);
        let mut alive = true;
        for _ in 0..64 {
            alive = tx.send(Bytes::from(vec![0u8; 256 << 10])).await;
        }
        assert!(!alive);
        tx.finish().await;
    }
}
