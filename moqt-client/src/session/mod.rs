//! [`MoqSession`]: the application's handle on a running session, its
//! set-up and the subscriber-side calls. The publisher-side calls are in
//! the `publisher` module.

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use bytes::Bytes;
use moqt::session::{RequestId, Role, SessionConfig};
use moqt::{
    FetchType, FullTrackName, JoiningFetch, Parameters, SessionErrorCode, SubscriptionFilter,
    TrackNamespace,
};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{self, Op};
mod subscription;

use crate::types::{IncomingSubscribe, SessionClosed, Shared};
use crate::SETUP_TIMEOUT;
pub use subscription::Subscription;

/// A handle on a running MoQT session; cheap to clone. The session closes
/// (NO_ERROR) when the last handle is dropped.
#[derive(Clone)]
pub struct MoqSession {
    pub(crate) ops: mpsc::Sender<Op>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) incoming: Arc<tokio::sync::Mutex<mpsc::Receiver<IncomingSubscribe>>>,
    pub(crate) namespaces: Arc<tokio::sync::Mutex<mpsc::Receiver<TrackNamespace>>>,
    conn: quinn::Connection,
}

/// Another name for [`MoqSession`], for code that only ever connects as a
/// client.
pub type MoqClient = MoqSession;

impl MoqSession {
    /// Connect to `server_addr` with `endpoint` (whose client config must
    /// offer [`crate::MOQT_ALPN`]) and run a client session; returns once the
    /// server's SETUP arrived.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        server_addr: SocketAddr,
        server_name: &str,
    ) -> anyhow::Result<Self> {
        Self::connect_with_tokens(endpoint, server_addr, server_name, &[]).await
    }

    /// [`MoqSession::connect`] presenting `tokens` in SETUP (AUTHORIZATION
    /// TOKEN options, USE_VALUE, Token Type 0: fastrelay's JWTs).
    pub async fn connect_with_tokens(
        endpoint: &quinn::Endpoint,
        server_addr: SocketAddr,
        server_name: &str,
        tokens: &[String],
    ) -> anyhow::Result<Self> {
        let conn = tokio::time::timeout(
            SETUP_TIMEOUT,
            endpoint
                .connect(server_addr, server_name)
                .with_context(|| format!("connecting to {server_addr}"))?,
        )
        .await
        .with_context(|| format!("QUIC handshake with {server_addr} timed out"))?
        .with_context(|| format!("QUIC handshake with {server_addr} failed"))?;
        let mut config = client_config();
        config.setup.options.extend(tokens.iter().map(|t| {
            moqt::SetupOption::AuthorizationToken(moqt::AuthToken::UseValue {
                token_type: 0,
                value: Bytes::copy_from_slice(t.as_bytes()),
            })
        }));
        Self::with_config(conn, Role::Client, config).await
    }

    /// Run a session of `role` over an established connection; returns
    /// once the peer's SETUP arrived (within [`SETUP_TIMEOUT`]).
    pub async fn from_connection(conn: quinn::Connection, role: Role) -> anyhow::Result<Self> {
        Self::with_config(conn, role, client_config()).await
    }

    /// [`MoqSession::from_connection`] with a session configuration.
    pub async fn with_config(
        conn: quinn::Connection,
        role: Role,
        config: SessionConfig,
    ) -> anyhow::Result<Self> {
        let handles = driver::spawn(conn.clone(), role, config);
        let session = MoqSession {
            ops: handles.ops,
            shared: handles.shared,
            incoming: Arc::new(tokio::sync::Mutex::new(handles.incoming)),
            namespaces: Arc::new(tokio::sync::Mutex::new(handles.namespaces)),
            conn,
        };
        match tokio::time::timeout(SETUP_TIMEOUT, handles.ready).await {
            Ok(Ok(())) => Ok(session),
            Ok(Err(_)) => Err(session.shared.closed_error()).context("MoQT SETUP exchange"),
            Err(_) => {
                let _ = session.close().await;
                bail!("no SETUP from the peer within {SETUP_TIMEOUT:?}")
            }
        }
    }

    /// The QUIC connection (stats, addresses).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Why the session ended, once it has.
    pub fn closed(&self) -> Option<SessionClosed> {
        self.shared.closed.lock().ok().and_then(|c| c.clone())
    }

    pub(crate) async fn call<T>(
        &self,
        what: &str,
        op: impl FnOnce(oneshot::Sender<T>) -> Op,
    ) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(op(tx)).await.is_err() {
            return Err(self.shared.closed_error()).context(what.to_string());
        }
        rx.await
            .map_err(|_| self.shared.closed_error())
            .context(what.to_string())
    }

    // ------------------------------------------------------------------
    // Subscriber side
    // ------------------------------------------------------------------

    /// SUBSCRIBE; waits for SUBSCRIBE_OK, or returns the REQUEST_ERROR.
    pub async fn subscribe(
        &self,
        track: FullTrackName,
        filter: Option<SubscriptionFilter>,
    ) -> anyhow::Result<Subscription> {
        let parameters = Parameters {
            subscription_filter: filter,
            ..Parameters::new()
        };
        self.subscribe_with(track, parameters).await
    }

    /// SUBSCRIBE with arbitrary parameters.
    pub async fn subscribe_with(
        &self,
        track: FullTrackName,
        parameters: Parameters,
    ) -> anyhow::Result<Subscription> {
        let what = format!("SUBSCRIBE {}", track.to_serialized());
        let ok = self
            .call(&what, |reply| Op::Subscribe {
                track,
                parameters,
                reply,
            })
            .await?
            .context(what)?;
        Ok(Subscription::new(ok, self.clone()))
    }

    /// A Relative Joining FETCH (§10.12.2) for `subscription`: the
    /// `groups_before` groups preceding its joining location. Waits for
    /// FETCH_OK; the objects then arrive on the returned [`Subscription`]
    /// (ending when the fetch stream ends).
    pub async fn fetch_joining(
        &self,
        subscription: &Subscription,
        groups_before: u64,
    ) -> anyhow::Result<Subscription> {
        self.fetch_type(
            subscription.id(),
            FetchType::RelativeJoining(JoiningFetch {
                joining_request_id: subscription.id().0,
                joining_start: groups_before,
            }),
        )
        .await
    }

    /// An Absolute Joining FETCH for `subscription` from `start_group`.
    pub async fn fetch_joining_absolute(
        &self,
        subscription: &Subscription,
        start_group: u64,
    ) -> anyhow::Result<Subscription> {
        self.fetch_type(
            subscription.id(),
            FetchType::AbsoluteJoining(JoiningFetch {
                joining_request_id: subscription.id().0,
                joining_start: start_group,
            }),
        )
        .await
    }

    async fn fetch_type(
        &self,
        subscription: RequestId,
        fetch_type: FetchType,
    ) -> anyhow::Result<Subscription> {
        let ok = self
            .call("FETCH", |reply| Op::FetchJoining {
                subscription,
                fetch_type,
                reply,
            })
            .await?
            .context("joining FETCH")?;
        Ok(Subscription::new(ok, self.clone()))
    }

    /// Close the session with NO_ERROR, after waiting (up to 2 s) for the
    /// peer to acknowledge every finished data stream.
    pub async fn close(&self) -> anyhow::Result<()> {
        self.close_with(SessionErrorCode::NoError, "bye", Duration::from_secs(2))
            .await
    }

    /// Close with a code and reason; finished streams get up to `flush`
    /// to be acknowledged first.
    pub async fn close_with(
        &self,
        code: SessionErrorCode,
        reason: &str,
        flush: Duration,
    ) -> anyhow::Result<()> {
        let reason = reason.to_string();
        // A driver that is already gone means the session is closed: fine.
        let _ = self
            .call("close", |reply| Op::Close {
                code,
                reason,
                flush,
                reply,
            })
            .await;
        Ok(())
    }
}

impl fmt::Debug for MoqSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MoqSession")
            .field("remote", &self.conn.remote_address())
            .field("closed", &self.closed())
            .finish_non_exhaustive()
    }
}

/// The session configuration of this library's endpoints.
fn client_config() -> SessionConfig {
    SessionConfig {
        setup: moqt::Setup {
            options: vec![moqt::SetupOption::MoqtImplementation(Bytes::from_static(
                b"fastrelay-bench",
            ))],
        },
        ..SessionConfig::default()
    }
}
