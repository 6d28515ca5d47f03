//! One TCP connection to one broker: 4-byte size framing, request and
//! response headers, correlation ids, and ApiVersions negotiation on connect.
//!
//! Requests go out one at a time and each waits for its answer, which is all
//! the CLI needs and keeps a timed-out exchange from desynchronising later
//! ones: after any transport error the connection refuses further use, and
//! the client opens a new one.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Error, Result};

/// Kafka's default `fetch.max.bytes` is 50 MiB; leave room above it for the
/// response envelope, and refuse anything larger before allocating.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// UNSUPPORTED_VERSION: a broker that cannot parse our ApiVersions request
/// answers with a v0 body carrying this code and its own version ranges.
const UNSUPPORTED_VERSION: i16 = 35;

/// Settings shared by every connection a client opens.
#[derive(Clone, Debug)]
pub struct ConnOptions {
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_response_bytes: usize,
}

impl Default for ConnOptions {
    fn default() -> Self {
        ConnOptions {
            client_id: "runnel-admin".to_owned(),
            connect_timeout: Duration::from_secs(10),
            // Kafka's request.timeout.ms default.
            request_timeout: Duration::from_secs(30),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// The version range a broker advertised for one API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokerVersions {
    pub min: i16,
    pub max: i16,
}

/// A negotiated connection to one broker.
pub struct Connection {
    addr: String,
    stream: TcpStream,
    opts: ConnOptions,
    next_correlation_id: i32,
    /// Set after a transport error: the stream position is unknown.
    broken: bool,
    versions: BTreeMap<i16, BrokerVersions>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("broken", &self.broken)
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` (host:port) and negotiates API versions.
    pub async fn connect(addr: &str, opts: &ConnOptions) -> Result<Self> {
        let stream =
            match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => {
                    return Err(Error::Connect {
                        addr: addr.to_owned(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(Error::Timeout {
                        addr: addr.to_owned(),
                        what: "the TCP connection".to_owned(),
                        ms: opts.connect_timeout.as_millis(),
                    })
                }
            };
        // Requests are small and latency-bound; don't let Nagle hold them.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(addr, error = %e, "cannot set TCP_NODELAY");
        }
        let mut conn = Connection {
            addr: addr.to_owned(),
            stream,
            opts: opts.clone(),
            next_correlation_id: 0,
            broken: false,
            versions: BTreeMap::new(),
        };
        conn.negotiate().await?;
        Ok(conn)
    }

    /// host:port this connection talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// False once a transport error left the stream in an unknown state.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// The API versions the broker advertised, by API key.
    pub fn broker_versions(&self) -> &BTreeMap<i16, BrokerVersions> {
        &self.versions
    }

    /// The highest version of request `R` both sides support.
    pub fn version_for<R: Request>(&self) -> Result<i16> {
        self.usable_version(R::KEY, R::VERSIONS.min, R::VERSIONS.max)
    }

    /// The highest version in `client_min..=client_max` that the broker
    /// also supports for `key`.
    pub fn usable_version(&self, key: i16, client_min: i16, client_max: i16) -> Result<i16> {
        let unsupported = || Error::UnsupportedVersion {
            addr: self.addr.clone(),
            api: ApiKey::try_from(key).unwrap_or(ApiKey::ApiVersions),
            client_min,
            client_max,
        };
        let broker = self.versions.get(&key).ok_or_else(unsupported)?;
        let max = broker.max.min(client_max);
        if max < broker.min.max(client_min) {
            return Err(unsupported());
        }
        Ok(max)
    }

    /// Sends `req` at the highest common version and waits for the answer.
    pub async fn send<R: Request>(&mut self, req: &R) -> Result<R::Response> {
        let version = self.version_for::<R>()?;
        self.send_version(req, version).await
    }

    /// Sends `req` at `version` and waits for the answer.
    pub async fn send_version<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let api = api_key(R::KEY);
        let mut body = self
            .round_trip(api, version, R::header_version(version), |buf| {
                req.encode(buf, version)
            })
            .await?
            .ok_or_else(|| Error::Decode {
                addr: self.addr.clone(),
                api,
                version,
                message: "no response".to_owned(),
            })?;
        self.decode_response::<R::Response>(api, version, &mut body)
    }

    /// Sends `req` when the broker will not answer (Produce with acks=0).
    pub async fn send_without_response<R: Request>(&mut self, req: &R, version: i16) -> Result<()> {
        let api = api_key(R::KEY);
        self.write_request(api, version, R::header_version(version), |buf| {
            req.encode(buf, version)
        })
        .await
    }

    async fn negotiate(&mut self) -> Result<()> {
        let api = ApiKey::ApiVersions;
        let mut version = ApiVersionsRequest::VERSIONS.max;
        // Each failed round lowers the version, so this ends quickly: at
        // most the version we started with, the broker's maximum, and v0.
        for _ in 0..3 {
            let req = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("runnel-admin"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let body = self
                .round_trip(
                    api,
                    version,
                    ApiVersionsRequest::header_version(version),
                    |buf| req.encode(buf, version),
                )
                .await?
                .ok_or_else(|| Error::Decode {
                    addr: self.addr.clone(),
                    api,
                    version,
                    message: "no response".to_owned(),
                })?;
            // As Kafka's Java client: parse at the version sent, and if that
            // fails, as v0 (the format a broker uses for UNSUPPORTED_VERSION).
            let decoded = ApiVersionsResponse::decode(&mut body.clone(), version)
                .or_else(|_| ApiVersionsResponse::decode(&mut body.clone(), 0))
                .map_err(|e| Error::Decode {
                    addr: self.addr.clone(),
                    api,
                    version,
                    message: format!("{e:#}"),
                })?;
            if decoded.error_code == 0 {
                self.store_versions(&decoded);
                return Ok(());
            }
            if decoded.error_code != UNSUPPORTED_VERSION || version == 0 {
                return Err(Error::kafka(decoded.error_code, None));
            }
            // Since Kafka 2.4 the error carries the broker's ApiVersions
            // range; without it, fall back to v0 (Java's NetworkClient does
            // the same).
            let broker_max = decoded
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                .map_or(0, |k| k.max_version);
            version = broker_max.clamp(0, version - 1);
        }
        Err(Error::UnsupportedVersion {
            addr: self.addr.clone(),
            api,
            client_min: ApiVersionsRequest::VERSIONS.min,
            client_max: ApiVersionsRequest::VERSIONS.max,
        })
    }

    fn store_versions(&mut self, response: &ApiVersionsResponse) {
        self.versions = response
            .api_keys
            .iter()
            .map(|k| {
                (
                    k.api_key,
                    BrokerVersions {
                        min: k.min_version,
                        max: k.max_version,
                    },
                )
            })
            .collect();
    }

    fn decode_response<T: Decodable + HeaderVersion>(
        &self,
        api: ApiKey,
        version: i16,
        body: &mut Bytes,
    ) -> Result<T> {
        let response = T::decode(body, version).map_err(|e| Error::Decode {
            addr: self.addr.clone(),
            api,
            version,
            message: format!("{e:#}"),
        })?;
        if !body.is_empty() {
            tracing::debug!(
                addr = %self.addr,
                ?api,
                version,
                trailing = body.len(),
                "response has trailing bytes"
            );
        }
        Ok(response)
    }

    /// Writes one request and reads its response body (after the response
    /// header), all under the request timeout.
    async fn round_trip<F>(
        &mut self,
        api: ApiKey,
        version: i16,
        header_version: i16,
        encode: F,
    ) -> Result<Option<Bytes>>
    where
        F: FnOnce(&mut BytesMut) -> anyhow::Result<()>,
    {
        let correlation_id = self.next_correlation_id;
        let frame = self.encode_request(api, version, header_version, encode)?;
        let timeout = self.opts.request_timeout;
        let fut = async {
            self.write_frame(frame).await?;
            let response_header_version = api.response_header_version(version);
            let mut body =
                read_frame(&mut self.stream, &self.addr, self.opts.max_response_bytes).await?;
            let header =
                ResponseHeader::decode(&mut body, response_header_version).map_err(|e| {
                    Error::Decode {
                        addr: self.addr.clone(),
                        api,
                        version,
                        message: format!("response header: {e:#}"),
                    }
                })?;
            if header.correlation_id != correlation_id {
                return Err(Error::CorrelationMismatch {
                    addr: self.addr.clone(),
                    expected: correlation_id,
                    got: header.correlation_id,
                });
            }
            Ok(Some(body))
        };
        let result = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                addr: self.addr.clone(),
                what: format!("a {api:?} response"),
                ms: timeout.as_millis(),
            }),
        };
        if let Err(e) = &result {
            if !matches!(e, Error::Decode { .. }) {
                self.broken = true;
            }
        }
        result
    }

    async fn write_request<F>(
        &mut self,
        api: ApiKey,
        version: i16,
        header_version: i16,
        encode: F,
    ) -> Result<()>
    where
        F: FnOnce(&mut BytesMut) -> anyhow::Result<()>,
    {
        let frame = self.encode_request(api, version, header_version, encode)?;
        let timeout = self.opts.request_timeout;
        let result = match tokio::time::timeout(timeout, self.write_frame(frame)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                addr: self.addr.clone(),
                what: format!("sending a {api:?} request"),
                ms: timeout.as_millis(),
            }),
        };
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn encode_request<F>(
        &mut self,
        api: ApiKey,
        version: i16,
        header_version: i16,
        encode: F,
    ) -> Result<Bytes>
    where
        F: FnOnce(&mut BytesMut) -> anyhow::Result<()>,
    {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.opts.client_id.clone())));
        let encode_err = |e: anyhow::Error| Error::Encode {
            api,
            version,
            message: format!("{e:#}"),
        };
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0); // size, filled in below
        header
            .encode(&mut buf, header_version)
            .map_err(encode_err)?;
        encode(&mut buf).map_err(encode_err)?;
        let size = i32::try_from(buf.len() - 4).map_err(|_| Error::Encode {
            api,
            version,
            message: format!("request of {} bytes is too large", buf.len()),
        })?;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        Ok(buf.freeze())
    }

    async fn write_frame(&mut self, frame: Bytes) -> Result<()> {
        if self.broken {
            return Err(Error::Io {
                addr: self.addr.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "connection unusable after an earlier error",
                ),
            });
        }
        self.stream
            .write_all(&frame)
            .await
            .map_err(|source| Error::Io {
                addr: self.addr.clone(),
                source,
            })
    }
}

fn api_key(key: i16) -> ApiKey {
    // `R::KEY` comes from kafka-protocol's own `Request` impls, so it is
    // always a key the crate knows; ApiVersions is a harmless fallback.
    ApiKey::try_from(key).unwrap_or(ApiKey::ApiVersions)
}

/// Reads one size-prefixed frame. The size is checked against `limit`
/// before anything is allocated, and the body buffer grows only as bytes
/// actually arrive, so a lying size prefix costs nothing.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    addr: &str,
    limit: usize,
) -> Result<Bytes> {
    let io_err = |source| Error::Io {
        addr: addr.to_owned(),
        source,
    };
    let mut size_buf = [0u8; 4];
    let mut got = 0;
    while got < size_buf.len() {
        let n = reader.read(&mut size_buf[got..]).await.map_err(io_err)?;
        if n == 0 {
            return Err(Error::Truncated {
                addr: addr.to_owned(),
                got,
                expected: size_buf.len(),
            });
        }
        got += n;
    }
    let size = i32::from_be_bytes(size_buf);
    let size = usize::try_from(size).map_err(|_| Error::InvalidFrameSize {
        addr: addr.to_owned(),
        size,
    })?;
    if size > limit {
        return Err(Error::ResponseTooLarge {
            addr: addr.to_owned(),
            size: size as i64,
            limit,
        });
    }
    let mut body = Vec::with_capacity(size.min(64 * 1024));
    let read = (&mut *reader)
        .take(size as u64)
        .read_to_end(&mut body)
        .await
        .map_err(io_err)?;
    if read < size {
        return Err(Error::Truncated {
            addr: addr.to_owned(),
            got: read,
            expected: size,
        });
    }
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    use kafka_protocol::protocol::decode_request_header_from_buffer;
    use tokio::net::TcpListener;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn reads_a_whole_frame() {
        let data = framed(b"hello");
        let body = read_frame(&mut &data[..], "t", 100).await.unwrap();
        assert_eq!(&body[..], b"hello");
    }

    #[tokio::test]
    async fn truncated_body_is_a_clean_error() {
        let mut data = 10i32.to_be_bytes().to_vec();
        data.extend_from_slice(b"abc");
        let err = read_frame(&mut &data[..], "t", 100).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    got: 3,
                    expected: 10,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn truncated_size_prefix_is_a_clean_error() {
        let data = [0u8, 0];
        let err = read_frame(&mut &data[..], "t", 100).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    got: 2,
                    expected: 4,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_allocation() {
        // Claims 2 GiB - 1 and sends nothing more: must fail on the size alone.
        let data = i32::MAX.to_be_bytes();
        let err = read_frame(&mut &data[..], "t", 1024).await.unwrap_err();
        assert!(
            matches!(err, Error::ResponseTooLarge { size, limit: 1024, .. } if size == i32::MAX as i64),
            "{err:?}"
        );
        let negative = (-5i32).to_be_bytes();
        let err = read_frame(&mut &negative[..], "t", 1024).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidFrameSize { size: -5, .. }),
            "{err:?}"
        );
    }

    /// A fake broker answering ApiVersions: first with UNSUPPORTED_VERSION
    /// (v0 body) when asked above v2, then normally; then one scripted reply.
    async fn fake_broker(listener: TcpListener, then: Vec<u8>) {
        let (mut sock, _) = listener.accept().await.unwrap();
        loop {
            let Ok(mut req) = read_frame(&mut sock, "client", 1 << 20).await else {
                return;
            };
            let header = decode_request_header_from_buffer(&mut req).unwrap();
            if header.request_api_key != ApiKey::ApiVersions as i16 {
                let mut out = header.correlation_id.to_be_bytes().to_vec();
                out.extend_from_slice(&then);
                let mut frame = (out.len() as i32).to_be_bytes().to_vec();
                frame.extend_from_slice(&out);
                sock.write_all(&frame).await.unwrap();
                continue;
            }
            let v = header.request_api_version;
            let keys = vec![
                ApiVersion::default()
                    .with_api_key(ApiKey::ApiVersions as i16)
                    .with_min_version(0)
                    .with_max_version(2),
                ApiVersion::default()
                    .with_api_key(ApiKey::Metadata as i16)
                    .with_min_version(0)
                    .with_max_version(9),
            ];
            let (resp, body_version) = if v > 2 {
                (
                    ApiVersionsResponse::default()
                        .with_error_code(UNSUPPORTED_VERSION)
                        .with_api_keys(keys),
                    0,
                )
            } else {
                (ApiVersionsResponse::default().with_api_keys(keys), v)
            };
            let mut out = BytesMut::new();
            out.put_i32(header.correlation_id); // response header v0
            resp.encode(&mut out, body_version).unwrap();
            let mut frame = (out.len() as i32).to_be_bytes().to_vec();
            frame.extend_from_slice(&out);
            sock.write_all(&frame).await.unwrap();
        }
    }

    #[tokio::test]
    async fn negotiates_down_and_picks_highest_common_version() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Metadata v9 response body (flexible: header v1 has tagged fields).
        let mut then = vec![0u8]; // empty tagged fields of response header v1
        let mut body = BytesMut::new();
        MetadataResponse::default().encode(&mut body, 9).unwrap();
        then.extend_from_slice(&body);
        tokio::spawn(fake_broker(listener, then));
        let mut conn = Connection::connect(&addr, &ConnOptions::default())
            .await
            .unwrap();
        assert_eq!(conn.version_for::<MetadataRequest>().unwrap(), 9);
        assert!(conn
            .version_for::<kafka_protocol::messages::FetchRequest>()
            .is_err());
        let resp = conn.send(&MetadataRequest::default()).await.unwrap();
        assert!(resp.brokers.is_empty());
    }

    #[tokio::test]
    async fn oversized_response_from_broker_is_a_clean_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let _ = read_frame(&mut sock, "client", 1 << 20).await;
            sock.write_all(&(200 * 1024 * 1024i32).to_be_bytes())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let err = Connection::connect(&addr, &ConnOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ResponseTooLarge { .. }), "{err:?}");
    }
}
