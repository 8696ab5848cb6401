//! Node configuration the packet logic depends on: the role and where the demultiplexing
//! ports are (seed guide, "Mobile and Remote Access Port Reference").

use edgeway_map_schema::{DEMUX_RTP_PORT, LARGE_DEMUX_PAIRS, MEDIA_PORT_MAX, MEDIA_PORT_MIN};

use crate::ConfigError;

/// Which half of the Expressway pair this node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Expressway-E: in the DMZ, relays media between clients and the demultiplexing ports.
    Edge,
    /// Expressway-C: inside, re-keys SRTP and sends to the edge's demultiplexing ports.
    Core,
}

/// Where the edge listens for the core's multiplexed media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DemuxLayout {
    /// Small and medium systems: one RTP/RTCP pair. `Some(port)`: the configured pair
    /// `port`/`port + 1` ("Use configured demultiplexing ports = Yes", 2776/2777 by default);
    /// `None`: the first pair of the media range (36000/36001 by default).
    Small {
        /// The configured RTP port, or `None` for the range's first pair.
        configured: Option<u16>,
    },
    /// Large systems: the first six pairs of the media range (36000-36011 by default).
    Large,
}

impl Default for DemuxLayout {
    fn default() -> Self {
        DemuxLayout::Small {
            configured: Some(DEMUX_RTP_PORT),
        }
    }
}

/// What a media worker needs to know about its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaConfig {
    /// Edge or core.
    pub role: Role,
    /// Demultiplexing ports (the edge listens on them; the core sends to them).
    pub layout: DemuxLayout,
    /// The media traversal port range, inclusive (36000-59999 by default).
    pub media_range: (u16, u16),
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            role: Role::Edge,
            layout: DemuxLayout::default(),
            media_range: (MEDIA_PORT_MIN, MEDIA_PORT_MAX),
        }
    }
}

impl MediaConfig {
    /// Checks that the layout and range make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (low, high) = self.media_range;
        if low == 0 || low > high {
            return Err(ConfigError::BadRange { low, high });
        }
        let reserved = match self.layout {
            DemuxLayout::Small {
                configured: Some(port),
            } => {
                if port == 0 || port % 2 == 1 || port == u16::MAX {
                    return Err(ConfigError::BadDemuxPort(port));
                }
                let overlaps = port <= high && port + 1 >= low;
                if overlaps && port != low {
                    return Err(ConfigError::DemuxPairInsideRange { port, low, high });
                }
                if overlaps {
                    2
                } else {
                    0
                }
            }
            DemuxLayout::Small { configured: None } => {
                if low % 2 == 1 {
                    return Err(ConfigError::OddRangeStart {
                        low,
                        layout: "first-pair",
                    });
                }
                2
            }
            DemuxLayout::Large => {
                if low % 2 == 1 {
                    return Err(ConfigError::OddRangeStart {
                        low,
                        layout: "large",
                    });
                }
                2 * LARGE_DEMUX_PAIRS
            }
        };
        if u32::from(high) - u32::from(low) < u32::from(reserved) {
            return Err(ConfigError::RangeTooSmall {
                low,
                high,
                reserved,
            });
        }
        Ok(())
    }

    /// The first demultiplexing RTP port and the number of pairs from it.
    pub(crate) fn demux_pairs(&self) -> (u16, u16) {
        match self.layout {
            DemuxLayout::Small {
                configured: Some(port),
            } => (port, 1),
            DemuxLayout::Small { configured: None } => (self.media_range.0, 1),
            DemuxLayout::Large => (self.media_range.0, LARGE_DEMUX_PAIRS),
        }
    }

    /// Every demultiplexing port, RTP and RTCP, in order (2776, 2777 by default).
    pub fn demux_ports(&self) -> Vec<u16> {
        let (first, pairs) = self.demux_pairs();
        (0..2 * pairs)
            .filter_map(|i| first.checked_add(i))
            .collect()
    }

    /// Whether `port` is one of the demultiplexing ports.
    #[inline]
    pub fn is_demux_port(&self, port: u16) -> bool {
        let (first, pairs) = self.demux_pairs();
        port >= first && u32::from(port - first) < 2 * u32::from(pairs)
    }

    /// The ports left for per-call media (the edge's client-facing ports), inclusive: the range
    /// less the demultiplexing pairs at its start (36002-59999, or 36012-59999 on large
    /// systems; the whole range when the configured pair lies outside it).
    pub fn client_port_range(&self) -> (u16, u16) {
        let (low, high) = self.media_range;
        let (first, pairs) = self.demux_pairs();
        if first == low {
            (low.saturating_add(2 * pairs), high)
        } else {
            (low, high)
        }
    }

    /// The worker (of `workers`) that owns demultiplexing port `port`: pair `i` goes to worker
    /// `i % workers`, its RTCP port with its RTP port. Ports that are not demultiplexing ports
    /// (and `workers == 0`) give worker 0.
    pub fn demux_owner(&self, port: u16, workers: usize) -> usize {
        if !self.is_demux_port(port) || workers == 0 {
            return 0;
        }
        let (first, _) = self.demux_pairs();
        usize::from((port - first) / 2) % workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(layout: DemuxLayout) -> MediaConfig {
        MediaConfig {
            layout,
            ..MediaConfig::default()
        }
    }

    #[test]
    fn layouts_follow_the_port_reference() {
        let small = MediaConfig::default();
        assert_eq!(small.demux_ports(), vec![2776, 2777]);
        assert_eq!(small.client_port_range(), (36000, 59999));
        assert!(small.is_demux_port(2777) && !small.is_demux_port(2778));
        assert!(!small.is_demux_port(36000));

        let first = config(DemuxLayout::Small { configured: None });
        assert_eq!(first.demux_ports(), vec![36000, 36001]);
        assert_eq!(first.client_port_range(), (36002, 59999));

        let large = config(DemuxLayout::Large);
        assert_eq!(large.demux_ports(), (36000..=36011).collect::<Vec<_>>());
        assert_eq!(large.client_port_range(), (36012, 59999));
        assert!(large.is_demux_port(36011) && !large.is_demux_port(36012));
        assert!(!large.is_demux_port(35999));
        for c in [small, first, large] {
            c.validate().unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
    }

    #[test]
    fn demux_pairs_are_spread_over_workers_with_their_rtcp_port() {
        let large = config(DemuxLayout::Large);
        let owners: Vec<usize> = (36000..=36011).map(|p| large.demux_owner(p, 4)).collect();
        assert_eq!(owners, [0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1]);
        assert_eq!(large.demux_owner(36005, 1), 0);
        assert_eq!(large.demux_owner(36005, 0), 0);
        assert_eq!(MediaConfig::default().demux_owner(2777, 2), 0);
    }

    #[test]
    fn bad_configurations_are_named() {
        let mut c = MediaConfig {
            media_range: (40000, 39999),
            ..MediaConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::BadRange { .. })));
        c.media_range = (0, 100);
        assert!(matches!(c.validate(), Err(ConfigError::BadRange { .. })));
        let c = config(DemuxLayout::Small {
            configured: Some(2777),
        });
        assert_eq!(c.validate(), Err(ConfigError::BadDemuxPort(2777)));
        let c = config(DemuxLayout::Small {
            configured: Some(40000),
        });
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DemuxPairInsideRange { port: 40000, .. })
        ));
        let c = config(DemuxLayout::Small {
            configured: Some(36000),
        });
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.client_port_range(), (36002, 59999));
        let mut c = config(DemuxLayout::Large);
        c.media_range = (36001, 59999);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OddRangeStart { .. })
        ));
        c.media_range = (36000, 36011);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::RangeTooSmall { .. })
        ));
        let e = config(DemuxLayout::Small {
            configured: Some(40000),
        })
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("40000/40001"), "{e}");
    }
}
