//! Loads shared by the demo and the namespace tests, so that both exercise
//! exactly the same thing.

/// Two prioritised tracks, one of whose subscribers sits behind a
/// bottleneck (issue 5): "video-base" (publisher priority 10, a third of the
/// bytes) and "video-enhancement" (priority 200, the rest), in groups of
/// [`Congestion::PER_GROUP`] objects at [`Congestion::GROUPS_PER_S`].
#[derive(Clone, Copy, Debug)]
pub struct Congestion {
    pub groups: u64,
}

impl Congestion {
    pub const GROUPS_PER_S: u64 = 20;
    pub const PER_GROUP: u64 = 10;
    pub const BASE_SIZE: u64 = 600;
    pub const ENHANCEMENT_SIZE: u64 = 1400;
    pub const BASE: &'static str = "video-base";
    pub const ENHANCEMENT: &'static str = "video-enhancement";

    /// Objects per track.
    pub fn objects(&self) -> u64 {
        self.groups * Self::PER_GROUP
    }

    /// Payload rate of both tracks together, kbit/s.
    pub fn combined_kbit() -> u64 {
        Self::GROUPS_PER_S * Self::PER_GROUP * (Self::BASE_SIZE + Self::ENHANCEMENT_SIZE) * 8 / 1000
    }

    /// `moq-pub` flags after `--track video-base`.
    pub fn publisher_flags(&self, start_delay_ms: u64) -> Vec<String> {
        [
            "--priority",
            "10",
            "--object-size",
            &Self::BASE_SIZE.to_string(),
            "--extra-track",
            Self::ENHANCEMENT,
            "--extra-priority",
            "200",
            "--extra-object-size",
            &Self::ENHANCEMENT_SIZE.to_string(),
            "--groups",
            &self.groups.to_string(),
            "--objects-per-group",
            &Self::PER_GROUP.to_string(),
            "--rate-groups-per-s",
            &Self::GROUPS_PER_S.to_string(),
            "--start-delay-ms",
            &start_delay_ms.to_string(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// `moq-sub` flags after `--track video-base`: both tracks, reported
    /// per group.
    pub fn subscriber_flags(&self, timeout_ms: u64) -> Vec<String> {
        [
            "--extra-track",
            Self::ENHANCEMENT,
            "--group-size",
            &Self::PER_GROUP.to_string(),
            "--expect-objects",
            &self.objects().to_string(),
            "--timeout-ms",
            &timeout_ms.to_string(),
            "--retry-ms",
            "5000",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// `&str` views of owned arguments.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
