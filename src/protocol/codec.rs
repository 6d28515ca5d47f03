//! Framing and header handling. "Check, then parse": `frame_length` says
//! whether a whole frame is buffered; `decode_request` turns one frame into a
//! typed request; `encode_response` produces the size-prefixed answer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::versions;

pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;

/// Why a frame could not become a request. Every variant closes the
/// connection (except the ApiVersions fallback, which is not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    FrameTooLarge { size: i64, max: usize },
    #[error("negative frame length {0}")]
    NegativeFrameLength(i32),
    #[error("request of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {cause}")]
    Malformed {
        api: ApiKey,
        version: i16,
        cause: String,
    },
    #[error("cannot encode {api:?} v{version} response: {cause}")]
    Encode {
        api: ApiKey,
        version: i16,
        cause: String,
    },
}

/// Returns the length of the frame at the front of `buf` (without its 4-byte
/// size prefix) once it is wholly buffered, `None` if more bytes are needed.
/// The size is checked before anything is allocated for it.
pub fn frame_length(buf: &[u8], max: usize) -> Result<Option<usize>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 {
        return Err(ProtocolError::NegativeFrameLength(size));
    }
    let size = size as usize;
    if size > max {
        return Err(ProtocolError::FrameTooLarge {
            size: size as i64,
            max,
        });
    }
    Ok((buf.len() >= 4 + size).then_some(size))
}

#[derive(Debug)]
pub struct Request {
    /// The client's address as Kafka shows it (`/127.0.0.1`), filled in by
    /// the listener; empty when unknown.
    pub client_host: String,
    /// Whether this request's connection has carried a Produce request
    /// before (or is one), filled in by the listener: Metadata answers a
    /// producer's connection a little differently (see
    /// `server::lookup::Listing`).
    pub producer_connection: bool,
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub version: i16,
    pub body: RequestKind,
}

// One `Decoded` exists per frame and is moved once: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decoded {
    Request(Request),
    /// An ApiVersions request at a version this broker does not know: answer
    /// in the v0 layout with UNSUPPORTED_VERSION and the supported ranges so
    /// that the client retries with one it can use (KIP-511).
    ApiVersionsFallback {
        correlation_id: i32,
    },
}

/// Decodes one frame (without its size prefix).
pub fn decode_request(mut frame: Bytes) -> Result<Decoded> {
    if frame.len() < 8 {
        return Err(ProtocolError::TooShort(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| ProtocolError::UnknownApiKey(key))?;
    if !versions::is_served(api, version) {
        if api == ApiKey::ApiVersions && version > 0 {
            return Ok(Decoded::ApiVersionsFallback { correlation_id });
        }
        if versions::range(api).is_none() {
            return Err(ProtocolError::UnknownApiKey(key));
        }
        return Err(ProtocolError::UnsupportedVersion { api, version });
    }
    let malformed = |e: anyhow::Error| ProtocolError::Malformed {
        api,
        version,
        cause: format!("{e:#}"),
    };
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(malformed)?;
    let body = match super::legacy::decode(api, version, &mut frame) {
        Some(body) => body,
        None => RequestKind::decode(api, &mut frame, version),
    }
    .map_err(malformed)?;
    if frame.has_remaining() {
        tracing::debug!(
            ?api,
            version,
            left = frame.remaining(),
            "request has trailing bytes"
        );
    }
    Ok(Decoded::Request(Request {
        client_host: String::new(),
        producer_connection: false,
        header,
        api_key: api,
        version,
        body,
    }))
}

/// Encodes a response with its size prefix and header. ApiVersions always
/// uses response header v0 (KIP-511).
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes> {
    let header_version = if api == ApiKey::ApiVersions {
        0
    } else {
        api.response_header_version(version)
    };
    let enc = |e: anyhow::Error| ProtocolError::Encode {
        api,
        version,
        cause: format!("{e:#}"),
    };
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .map_err(enc)?;
    match super::legacy::encode(api, version, body, &mut buf) {
        Some(r) => r.map_err(enc)?,
        None => body.encode(&mut buf, version).map_err(enc)?,
    }
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// The ApiVersions answer in the v0 layout with `error_code`.
pub fn encode_api_versions_fallback(correlation_id: i32, error_code: i16) -> Bytes {
    let body = ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(error_code)
            .with_api_keys(advertised_api_versions()),
    );
    // v0 of ApiVersionsResponse has only plain fields: encoding cannot fail.
    encode_response(ApiKey::ApiVersions, 0, correlation_id, &body).unwrap_or_else(|_| Bytes::new())
}

/// The ApiVersions entries this broker advertises.
pub fn advertised_api_versions() -> Vec<ApiVersion> {
    versions::SUPPORTED
        .iter()
        .map(|r| {
            ApiVersion::default()
                .with_api_key(r.key as i16)
                .with_min_version(r.min)
                .with_max_version(r.max)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::MetadataRequest;

    fn frame(key: i16, version: i16, header_version: i16, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .encode(&mut buf, header_version)
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn frame_length_checks_before_parsing() {
        assert_eq!(frame_length(&[0, 0], 100).unwrap(), None);
        assert_eq!(frame_length(&[0, 0, 0, 3, 1, 2], 100).unwrap(), None);
        assert_eq!(frame_length(&[0, 0, 0, 2, 1, 2], 100).unwrap(), Some(2));
        assert!(matches!(
            frame_length(&[0xff, 0xff, 0xff, 0xff], 100),
            Err(ProtocolError::NegativeFrameLength(-1))
        ));
        assert!(matches!(
            frame_length(&[0, 0, 1, 0], 100),
            Err(ProtocolError::FrameTooLarge { size: 256, .. })
        ));
    }

    #[test]
    fn metadata_round_trip() {
        let f = frame(3, 12, 2, &MetadataRequest::default());
        match decode_request(f).unwrap() {
            Decoded::Request(r) => {
                assert_eq!(r.api_key, ApiKey::Metadata);
                assert_eq!(r.header.correlation_id, 7);
                assert!(matches!(r.body, RequestKind::Metadata(_)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_array_count_is_an_error_not_an_allocation() {
        // Metadata v1: header (key 3, version 1, correlation 7, client id
        // null) then a topics array that claims i32::MAX entries.
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        buf.put_i16(1);
        buf.put_i32(7);
        buf.put_i16(-1);
        buf.put_i32(i32::MAX);
        let err = decode_request(buf.freeze()).unwrap_err();
        assert!(matches!(err, ProtocolError::Malformed { .. }), "{err}");
    }

    #[test]
    fn unknown_keys_and_versions() {
        let f = frame(3, 12, 2, &MetadataRequest::default());
        let mut raw = BytesMut::from(&f[..]);
        raw[0..2].copy_from_slice(&9999i16.to_be_bytes());
        assert!(matches!(
            decode_request(raw.freeze()),
            Err(ProtocolError::UnknownApiKey(9999))
        ));
        let mut raw = BytesMut::from(&f[..]);
        raw[2..4].copy_from_slice(&99i16.to_be_bytes());
        assert!(matches!(
            decode_request(raw.freeze()),
            Err(ProtocolError::UnsupportedVersion { .. })
        ));
        let mut raw = BytesMut::from(&f[..]);
        raw[0..2].copy_from_slice(&18i16.to_be_bytes());
        raw[2..4].copy_from_slice(&127i16.to_be_bytes());
        assert!(matches!(
            decode_request(raw.freeze()),
            Ok(Decoded::ApiVersionsFallback { correlation_id: 7 })
        ));
    }

    #[test]
    fn api_versions_fallback_is_v0_layout() {
        let b = encode_api_versions_fallback(9, 35);
        let mut body = b.slice(4..);
        assert_eq!(body.get_i32(), 9); // correlation id, header v0
        let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(resp.error_code, 35);
        assert!(resp
            .api_keys
            .iter()
            .any(|k| k.api_key == 18 && k.max_version == 4));
    }
}
