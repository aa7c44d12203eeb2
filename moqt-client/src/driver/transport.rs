//! The quinn side of a session: one acceptor task per connection, one
//! reader task per receive stream and one writer task per send stream,
//! all feeding the driver's input channel.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use bytes::Bytes;
use moqt::session::StreamRef;
use tokio::sync::{mpsc, oneshot};

use super::{Input, WriteOp};

pub(super) async fn acceptor(conn: quinn::Connection, input: mpsc::Sender<Input>) {
    loop {
        let item = tokio::select! {
            s = conn.accept_uni() => s.map(Input::Uni),
            s = conn.accept_bi() => s.map(|(send, recv)| Input::Bi(send, recv)),
            d = conn.read_datagram() => d.map(Input::Datagram),
        };
        match item {
            Ok(item) => {
                if input.send(item).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = input.send(Input::ConnectionLost(e)).await;
                return;
            }
        }
    }
}

pub(super) async fn reader(
    stream: StreamRef,
    mut recv: quinn::RecvStream,
    mut stop: oneshot::Receiver<u64>,
    input: mpsc::Sender<Input>,
) {
    loop {
        let chunk = tokio::select! {
            code = &mut stop => {
                if let Ok(code) = code {
                    let _ = recv.stop(quinn::VarInt::from_u64(code).unwrap_or(quinn::VarInt::MAX));
                }
                return;
            }
            c = recv.read_chunk(usize::MAX, true) => c,
        };
        let item = match chunk {
            Ok(Some(c)) => Input::Data {
                stream,
                data: c.bytes,
                fin: false,
            },
            Ok(None) => Input::Data {
                stream,
                data: Bytes::new(),
                fin: true,
            },
            Err(quinn::ReadError::Reset(code)) => Input::Reset {
                stream,
                code: code.into_inner(),
            },
            // Connection loss arrives through the acceptor.
            Err(_) => return,
        };
        let last = !matches!(item, Input::Data { fin: false, .. });
        if input.send(item).await.is_err() || last {
            return;
        }
    }
}

pub(super) enum Opening {
    Uni,
    Bi(oneshot::Receiver<u64>),
}

pub(super) async fn writer(
    conn: quinn::Connection,
    stream: StreamRef,
    opening: Opening,
    ops: mpsc::Receiver<WriteOp>,
    input: mpsc::Sender<Input>,
) {
    let opened = match opening {
        Opening::Uni => conn.open_uni().await,
        Opening::Bi(stop) => conn.open_bi().await.map(|(send, recv)| {
            tokio::spawn(reader(stream, recv, stop, input.clone()));
            send
        }),
    };
    let Ok(send) = opened else {
        // Connection gone; the acceptor reports it.
        return;
    };
    write_loop(send, stream, ops, input).await
}

/// Held while a finished stream waits for the peer's acknowledgement, so
/// [`MoqSession::close`] can wait for the data to be delivered.
pub(super) struct FlushGuard(Arc<AtomicUsize>);

impl FlushGuard {
    pub(super) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        FlushGuard(count.clone())
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) async fn write_loop(
    mut send: quinn::SendStream,
    stream: StreamRef,
    mut ops: mpsc::Receiver<WriteOp>,
    input: mpsc::Sender<Input>,
) {
    let stopped = send.stopped();
    tokio::pin!(stopped);
    let mut stop_code = None;
    loop {
        let op = tokio::select! {
            op = ops.recv() => op,
            r = &mut stopped => {
                if let Ok(Some(code)) = r {
                    stop_code = Some(code.into_inner());
                }
                break;
            }
        };
        let Some(op) = op else {
            // The driver forgot the stream (session over): drop it.
            return;
        };
        let (result, guard) = match op {
            WriteOp::Data(data, guard) => {
                let mut r = send.write_chunk(data).await;
                if guard.is_some() && r.is_ok() {
                    r = send.finish().map_err(|_| quinn::WriteError::ClosedStream);
                }
                (r, guard)
            }
            WriteOp::Finish(guard) => (
                send.finish().map_err(|_| quinn::WriteError::ClosedStream),
                Some(guard),
            ),
            WriteOp::Reset(code) => {
                let _ = send.reset(quinn::VarInt::from_u64(code).unwrap_or(quinn::VarInt::MAX));
                return;
            }
        };
        match result {
            Err(quinn::WriteError::Stopped(code)) => {
                stop_code = Some(code.into_inner());
                break;
            }
            Err(_) => break,
            Ok(()) => {
                if let Some(guard) = guard {
                    // Wait for the peer's acknowledgement so close() can flush.
                    ops.close();
                    let _ = stopped.await;
                    drop(guard);
                    return;
                }
            }
        }
    }
    // Stopped or failed: never block the driver on this queue again.
    ops.close();
    drop(ops);
    if let Some(code) = stop_code {
        let _ = input.send(Input::Stopped { stream, code }).await;
    }
}
