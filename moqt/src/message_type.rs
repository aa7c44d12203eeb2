//! Control message types (§10 Table 5).
//!
//! A leaf module: decode errors and the parameter tables name message
//! types too, and [`crate::message`] builds on both, so the type lives
//! below all three (re-exported as `moqt::message::MessageType`).

/// Control message types (§10 Table 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// SETUP (0x2F00), control stream.
    Setup,
    /// GOAWAY (0x10), control or request stream.
    GoAway,
    /// SUBSCRIBE (0x3), first on a request stream.
    Subscribe,
    /// SUBSCRIBE_OK (0x4).
    SubscribeOk,
    /// PUBLISH (0x1D), first on a request stream.
    Publish,
    /// PUBLISH_OK (0x1E): still listed in Table 5, but §10.5 and change
    /// #1611 made PUBLISH_OK an alias of REQUEST_OK (0x7).
    PublishOk,
    /// PUBLISH_DONE (0xB).
    PublishDone,
    /// FETCH (0x16), first on a request stream.
    Fetch,
    /// FETCH_OK (0x18).
    FetchOk,
    /// TRACK_STATUS (0xD), first on a request stream.
    TrackStatus,
    /// PUBLISH_NAMESPACE (0x6), first on a request stream.
    PublishNamespace,
    /// SUBSCRIBE_NAMESPACE (0x50), first on a request stream.
    SubscribeNamespace,
    /// SUBSCRIBE_TRACKS (0x51), first on a request stream.
    SubscribeTracks,
    /// NAMESPACE (0x8).
    Namespace,
    /// NAMESPACE_DONE (0xE).
    NamespaceDone,
    /// PUBLISH_BLOCKED (0xF).
    PublishBlocked,
    /// REQUEST_UPDATE (0x2).
    RequestUpdate,
    /// REQUEST_OK (0x7).
    RequestOk,
    /// REQUEST_ERROR (0x5).
    RequestError,
}

impl MessageType {
    /// Every defined type.
    pub const ALL: [MessageType; 19] = [
        MessageType::Setup,
        MessageType::GoAway,
        MessageType::Subscribe,
        MessageType::SubscribeOk,
        MessageType::Publish,
        MessageType::PublishOk,
        MessageType::PublishDone,
        MessageType::Fetch,
        MessageType::FetchOk,
        MessageType::TrackStatus,
        MessageType::PublishNamespace,
        MessageType::SubscribeNamespace,
        MessageType::SubscribeTracks,
        MessageType::Namespace,
        MessageType::NamespaceDone,
        MessageType::PublishBlocked,
        MessageType::RequestUpdate,
        MessageType::RequestOk,
        MessageType::RequestError,
    ];

    /// The wire value.
    pub const fn code(self) -> u64 {
        match self {
            MessageType::Setup => 0x2F00,
            MessageType::GoAway => 0x10,
            MessageType::Subscribe => 0x3,
            MessageType::SubscribeOk => 0x4,
            MessageType::Publish => 0x1D,
            MessageType::PublishOk => 0x1E,
            MessageType::PublishDone => 0xB,
            MessageType::Fetch => 0x16,
            MessageType::FetchOk => 0x18,
            MessageType::TrackStatus => 0xD,
            MessageType::PublishNamespace => 0x6,
            MessageType::SubscribeNamespace => 0x50,
            MessageType::SubscribeTracks => 0x51,
            MessageType::Namespace => 0x8,
            MessageType::NamespaceDone => 0xE,
            MessageType::PublishBlocked => 0xF,
            MessageType::RequestUpdate => 0x2,
            MessageType::RequestOk => 0x7,
            MessageType::RequestError => 0x5,
        }
    }

    /// From a wire value; `None` for unknown and reserved types.
    pub const fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0x2F00 => MessageType::Setup,
            0x10 => MessageType::GoAway,
            0x3 => MessageType::Subscribe,
            0x4 => MessageType::SubscribeOk,
            0x1D => MessageType::Publish,
            0x1E => MessageType::PublishOk,
            0xB => MessageType::PublishDone,
            0x16 => MessageType::Fetch,
            0x18 => MessageType::FetchOk,
            0xD => MessageType::TrackStatus,
            0x6 => MessageType::PublishNamespace,
            0x50 => MessageType::SubscribeNamespace,
            0x51 => MessageType::SubscribeTracks,
            0x8 => MessageType::Namespace,
            0xE => MessageType::NamespaceDone,
            0xF => MessageType::PublishBlocked,
            0x2 => MessageType::RequestUpdate,
            0x7 => MessageType::RequestOk,
            0x5 => MessageType::RequestError,
            _ => return None,
        })
    }

    /// True for the seven types that may open a bidirectional request
    /// stream (§3.3); any other first message is a PROTOCOL_VIOLATION.
    pub const fn starts_request_stream(self) -> bool {
        matches!(
            self,
            MessageType::TrackStatus
                | MessageType::Subscribe
                | MessageType::Publish
                | MessageType::Fetch
                | MessageType::PublishNamespace
                | MessageType::SubscribeNamespace
                | MessageType::SubscribeTracks
        )
    }

    /// True if the type may be sent on the control stream (Table 5).
    pub const fn allowed_on_control_stream(self) -> bool {
        matches!(self, MessageType::Setup | MessageType::GoAway)
    }

    /// True if the type may be sent on a request stream (Table 5).
    pub const fn allowed_on_request_stream(self) -> bool {
        !matches!(self, MessageType::Setup)
    }
}
