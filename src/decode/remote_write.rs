//! Prometheus remote-write 1.0: a snappy-compressed (block format) protobuf `WriteRequest` of
//! time series, each a set of labels and (value, millisecond timestamp) samples. What a real
//! Prometheus sends to a `remote_write` URL.
//!
//! Decoding allocates (protobuf strings); it runs on the HTTP ingest thread, never on a shard.
//! Hostile input is bounded: the decompressed size is read from the snappy header and refused
//! above the caller's limit before anything is allocated for it.
//!
//! May depend on: nothing outside `decode`. Lives on: the HTTP thread (and tests, benches).

/// `prometheus.WriteRequest` (fields we read; metadata and others are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// Not snappy block format.
    #[error("body is not snappy-compressed (block format): {0}")]
    Snappy(String),
    /// Decompressed size above the limit.
    #[error("decompressed body of {0} bytes is above the limit of {1} bytes (hosts.max_body_bytes)")]
    TooLarge(usize, usize),
    /// Not a `WriteRequest`.
    #[error("body is not a remote-write WriteRequest protobuf: {0}")]
    Protobuf(String),
}

/// Decodes one request body (snappy block format, then protobuf).
pub fn decode(body: &[u8], max: usize) -> Result<WriteRequest, RemoteWriteError> {
    let n = snap::raw::decompress_len(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    if n > max {
        return Err(RemoteWriteError::TooLarge(n, max));
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    <WriteRequest as prost::Message>::decode(raw.as_slice()).map_err(|e| RemoteWriteError::Protobuf(e.to_string()))
}

/// Encodes a request (what Prometheus sends; used by tests and the benchmark).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(req);
    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_bodies() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label { name: "__name__".into(), value: "node_load1".into() },
                    Label { name: "instance".into(), value: "h:9100".into() },
                ],
                samples: vec![Sample { value: 0.5, timestamp: 1_700_000_000_123 }],
            }],
        };
        let body = encode(&req);
        assert_eq!(decode(&body, 1 << 20).unwrap(), req);
        assert!(matches!(
            decode(b"not snappy at all", 1 << 20),
            Err(RemoteWriteError::Snappy(_) | RemoteWriteError::Protobuf(_))
        ));
        assert!(matches!(decode(&body, 4), Err(RemoteWriteError::TooLarge(_, 4))));
        // a snappy header claiming 4 GiB is refused before allocating
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff, 0xff, 0x0f], 1 << 20),
            Err(RemoteWriteError::TooLarge(..) | RemoteWriteError::Snappy(_))
        ));
        let junk = snap::raw::Encoder::new().compress_vec(&[0x0a, 0xff, 0xff]).unwrap();
        assert!(matches!(decode(&junk, 1 << 20), Err(RemoteWriteError::Protobuf(_))));
    }
}
