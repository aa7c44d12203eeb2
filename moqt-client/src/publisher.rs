//! The publisher side of [`MoqSession`]: namespaces, incoming SUBSCRIBEs
//! and the objects sent for them.

use anyhow::Context;
use bytes::Bytes;
use moqt::session::{OutgoingObject, RequestId};
use moqt::{
    DatagramContent, Location, ObjectDatagram, ObjectStatus, PublishDoneCode, RequestErrorCode,
    TrackNamespace,
};

use crate::driver::Op;
use crate::session::MoqSession;
use crate::types::IncomingSubscribe;

impl MoqSession {
    /// PUBLISH_NAMESPACE; waits for REQUEST_OK (or the REQUEST_ERROR as error).
    pub async fn publish_namespace(&self, namespace: TrackNamespace) -> anyhow::Result<()> {
        let what = format!("PUBLISH_NAMESPACE {}", namespace.to_serialized());
        self.call(&what, |reply| Op::PublishNamespace { namespace, reply })
            .await?
            .context(what)
    }

    /// The next SUBSCRIBE from the peer; `None` once the session ended.
    pub async fn next_subscribe(&self) -> Option<IncomingSubscribe> {
        self.incoming.lock().await.recv().await
    }

    /// The next PUBLISH_NAMESPACE from the peer (already answered with
    /// REQUEST_OK); `None` once the session ended. Unread ones beyond
    /// [`INCOMING_QUEUE`](crate::INCOMING_QUEUE) are not reported (still
    /// accepted).
    pub async fn next_namespace(&self) -> Option<TrackNamespace> {
        self.namespaces.lock().await.recv().await
    }

    /// SUBSCRIBE_OK; returns the Track Alias to send objects with.
    /// `largest` is sent as LARGEST_OBJECT.
    pub async fn accept_subscribe(
        &self,
        id: RequestId,
        largest: Option<Location>,
    ) -> anyhow::Result<u64> {
        self.call("SUBSCRIBE_OK", |reply| Op::Accept { id, largest, reply })
            .await?
            .with_context(|| format!("SUBSCRIBE_OK for {id:?}"))
    }

    /// REQUEST_ERROR for a peer's SUBSCRIBE.
    pub async fn reject_subscribe(
        &self,
        id: RequestId,
        code: RequestErrorCode,
        reason: &str,
    ) -> anyhow::Result<()> {
        let reason = reason.to_string();
        self.call("REQUEST_ERROR", |reply| Op::Reject {
            id,
            code,
            reason,
            reply,
        })
        .await?
        .with_context(|| format!("REQUEST_ERROR for {id:?}"))
    }

    /// Send one object on the (alias, group, subgroup) stream, opened on
    /// first use. Fails if the subscription is gone (e.g. cancelled).
    pub async fn send_object(
        &self,
        alias: u64,
        group: u64,
        subgroup: u64,
        object_id: u64,
        priority: Option<u8>,
        payload: Bytes,
    ) -> anyhow::Result<()> {
        let object = OutgoingObject {
            track_alias: alias,
            location: Location {
                group,
                object: object_id,
            },
            subgroup,
            publisher_priority: priority,
            status: ObjectStatus::Normal,
            properties: Default::default(),
            payload,
        };
        self.call("send object", |reply| Op::SendObject { object, reply })
            .await?
            .with_context(|| format!("object {group}/{subgroup}/{object_id} on alias {alias}"))
    }

    /// FIN the (alias, group, subgroup) stream; false if it was not open.
    pub async fn end_subgroup(
        &self,
        alias: u64,
        group: u64,
        subgroup: u64,
    ) -> anyhow::Result<bool> {
        self.call("end subgroup", |reply| Op::EndSubgroup {
            alias,
            group,
            subgroup,
            reply,
        })
        .await
    }

    /// Send one object as an OBJECT_DATAGRAM.
    pub async fn send_datagram(
        &self,
        alias: u64,
        group: u64,
        object_id: u64,
        priority: Option<u8>,
        payload: Bytes,
    ) -> anyhow::Result<()> {
        let datagram = ObjectDatagram {
            track_alias: alias,
            group_id: group,
            object_id,
            publisher_priority: priority,
            end_of_group: false,
            properties: Default::default(),
            content: DatagramContent::Payload(payload),
        };
        self.call("send datagram", |reply| Op::SendDatagram {
            datagram,
            reply,
        })
        .await?
        .with_context(|| format!("datagram {group}/{object_id} on alias {alias}"))
    }

    /// PUBLISH_DONE for a subscription we accepted; the stream count is
    /// the number of subgroup streams this session opened for it.
    pub async fn publish_done(
        &self,
        id: RequestId,
        code: PublishDoneCode,
        reason: &str,
    ) -> anyhow::Result<()> {
        let reason = reason.to_string();
        self.call("PUBLISH_DONE", |reply| Op::PublishDone {
            id,
            code,
            reason,
            reply,
        })
        .await?
        .with_context(|| format!("PUBLISH_DONE for {id:?}"))
    }
}
