//! The echo client: proves the relay's QUIC path end to end by echoing a
//! stream of pseudo-random bytes and a series of ping-pong DATAGRAMs.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Serialize;

/// Per-datagram wait before it is sent again.
const DATAGRAM_TIMEOUT: Duration = Duration::from_millis(300);
/// Sends of one datagram before it counts as lost.
const DATAGRAM_TRIES: u32 = 3;
const DATAGRAM_SIZE: usize = 64;

#[derive(Debug, Serialize)]
pub struct StreamResult {
    pub bytes: u64,
    pub seconds: f64,
    pub mbytes_per_s: f64,
    pub verified: bool,
}

#[derive(Debug, Serialize)]
pub struct DatagramResult {
    pub sent: u64,
    pub echoed: u64,
    pub retries: u64,
    pub lost: u64,
    pub rtt_us_p50: u64,
    pub rtt_us_p99: u64,
    pub rtt_us_max: u64,
}

/// Deterministic test pattern: byte i of the stream.
fn pattern(offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let x = offset + i as u64;
        *b = (x ^ (x >> 8) ^ (x >> 16)).wrapping_mul(31) as u8;
    }
}

/// Writes `total` bytes on a new bidirectional stream while reading the echo
/// back, and checks every byte.
pub async fn echo_stream(conn: &quinn::Connection, total: u64) -> anyhow::Result<StreamResult> {
    let (mut send, mut recv) = conn.open_bi().await.context("opening a stream")?;
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0u64;
        while offset < total {
            let n = ((total - offset) as usize).min(buf.len());
            pattern(offset, &mut buf[..n]);
            send.write_all(&buf[..n]).await?;
            offset += n as u64;
        }
        send.finish()?;
        anyhow::Ok(())
    });
    let mut received = 0u64;
    let mut verified = true;
    let mut expect = vec![0u8; 64 * 1024];
    while let Some(chunk) = recv
        .read_chunk(64 * 1024, true)
        .await
        .context("reading the echo")?
    {
        let n = chunk.bytes.len();
        pattern(received, &mut expect[..n]);
        verified &= chunk.bytes[..] == expect[..n];
        received += n as u64;
    }
    writer.await.context("writer task")??;
    let seconds = start.elapsed().as_secs_f64();
    if received != total {
        bail!("stream echo returned {received} of {total} bytes");
    }
    Ok(StreamResult {
        bytes: received,
        seconds,
        mbytes_per_s: received as f64 / seconds / 1e6,
        verified,
    })
}

/// Sends `count` datagrams one at a time and waits for each echo (ping-pong),
/// so that every exchange is one round-trip time.
pub async fn echo_datagrams(
    conn: &quinn::Connection,
    count: u64,
) -> anyhow::Result<DatagramResult> {
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut echoed, mut retries, mut lost) = (0, 0, 0);
    let mut payload = vec![0u8; DATAGRAM_SIZE];
    'next: for seq in 0..count {
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        for attempt in 0..DATAGRAM_TRIES {
            if attempt > 0 {
                retries += 1;
            }
            let sent_at = Instant::now();
            conn.send_datagram(Bytes::copy_from_slice(&payload))
                .context("sending a datagram")?;
            let deadline = sent_at + DATAGRAM_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, conn.read_datagram()).await {
                    Err(_) => break, // timed out: send again
                    Ok(r) => {
                        let d = r.context("connection failed while waiting for a datagram echo")?;
                        if d.len() >= 8 && d[..8] == seq.to_be_bytes() {
                            echoed += 1;
                            hist.saturating_record(sent_at.elapsed().as_micros() as u64);
                            continue 'next;
                        }
                        // A late echo of an earlier try: ignore.
                    }
                }
            }
        }
        lost += 1;
    }
    Ok(DatagramResult {
        sent: count,
        echoed,
        retries,
        lost,
        rtt_us_p50: hist.value_at_quantile(0.5),
        rtt_us_p99: hist.value_at_quantile(0.99),
        rtt_us_max: hist.max(),
    })
}
