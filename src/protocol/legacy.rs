//! Request versions older than `kafka-protocol` decodes (Kafka 4 dropped
//! them, KIP-896), coded by hand so that old clients keep working:
//!
//! * DescribeConfigs v0 (Sarama 1.22, clients pinned to 0.11): its request
//!   is v1's without `include_synonyms`, so it is decoded as v1 with that
//!   flag false; its response has `is_default` where v1 has
//!   `config_source` and no synonyms, so it is written here.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::Decodable;

/// The versions coded here, by API.
pub const HAND_CODED: &[(ApiKey, i16)] = &[(ApiKey::DescribeConfigs, 0)];

pub fn is_hand_coded(api: ApiKey, version: i16) -> bool {
    HAND_CODED.contains(&(api, version))
}

/// Decodes the body of a hand-coded version; `None` for any other.
pub fn decode(api: ApiKey, version: i16, body: &mut Bytes) -> Option<anyhow::Result<RequestKind>> {
    if !is_hand_coded(api, version) {
        return None;
    }
    // DescribeConfigs v0 is v1 without the trailing include_synonyms.
    let mut v1 = BytesMut::with_capacity(body.len() + 1);
    v1.put_slice(body);
    v1.put_u8(0);
    body.advance(body.len());
    let mut v1 = v1.freeze();
    Some(
        kafka_protocol::messages::DescribeConfigsRequest::decode(&mut v1, 1)
            .map(RequestKind::DescribeConfigs),
    )
}

fn put_string(buf: &mut BytesMut, s: &str) -> anyhow::Result<()> {
    let len = i16::try_from(s.len()).map_err(|_| anyhow::anyhow!("string too long"))?;
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

fn put_nullable(buf: &mut BytesMut, s: Option<&str>) -> anyhow::Result<()> {
    match s {
        Some(s) => put_string(buf, s),
        None => {
            buf.put_i16(-1);
            Ok(())
        }
    }
}

/// Encodes the body of a hand-coded version; `None` for any other.
pub fn encode(
    api: ApiKey,
    version: i16,
    body: &ResponseKind,
    buf: &mut BytesMut,
) -> Option<anyhow::Result<()>> {
    if !is_hand_coded(api, version) {
        return None;
    }
    let ResponseKind::DescribeConfigs(r) = body else {
        return Some(Err(anyhow::anyhow!("not a DescribeConfigs response")));
    };
    let write = |buf: &mut BytesMut| -> anyhow::Result<()> {
        buf.put_i32(r.throttle_time_ms);
        buf.put_i32(r.results.len() as i32);
        for res in &r.results {
            buf.put_i16(res.error_code);
            put_nullable(buf, res.error_message.as_deref().filter(|m| !m.is_empty()))?;
            buf.put_i8(res.resource_type);
            put_string(buf, &res.resource_name)?;
            buf.put_i32(res.configs.len() as i32);
            for c in &res.configs {
                put_string(buf, &c.name)?;
                put_nullable(buf, c.value.as_deref())?;
                buf.put_i8(i8::from(c.read_only));
                // DEFAULT_CONFIG (5) is v0's is_default.
                buf.put_i8(i8::from(c.config_source == 5));
                buf.put_i8(i8::from(c.is_sensitive));
            }
        }
        Ok(())
    };
    Some(write(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult,
    };
    use kafka_protocol::messages::DescribeConfigsResponse;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn describe_configs_v0_round_trips_in_its_own_layout() {
        // resources: [ (2, "t", null) ]
        let mut req = BytesMut::new();
        req.put_i32(1);
        req.put_i8(2);
        req.put_i16(1);
        req.put_slice(b"t");
        req.put_i32(-1);
        let mut req = req.freeze();
        let Some(Ok(RequestKind::DescribeConfigs(d))) =
            decode(ApiKey::DescribeConfigs, 0, &mut req)
        else {
            panic!("v0 request did not decode");
        };
        assert_eq!(d.resources.len(), 1);
        assert_eq!(d.resources[0].resource_name.as_str(), "t");
        assert!(!d.include_synonyms && d.resources[0].configuration_keys.is_none());

        let resp =
            ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(vec![
            DescribeConfigsResult::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configs(vec![DescribeConfigsResourceResult::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("1000")))
                    .with_config_source(1)]),
        ]));
        let mut buf = BytesMut::new();
        encode(ApiKey::DescribeConfigs, 0, &resp, &mut buf)
            .unwrap()
            .unwrap();
        let mut b = buf.freeze();
        assert_eq!(b.get_i32(), 0); // throttle
        assert_eq!(b.get_i32(), 1); // results
        assert_eq!(b.get_i16(), 0); // error
        assert_eq!(b.get_i16(), -1); // no message
        assert_eq!(b.get_i8(), 2);
        assert_eq!(b.get_i16(), 1);
        b.advance(1);
        assert_eq!(b.get_i32(), 1); // configs
        assert_eq!(b.get_i16(), 12);
        b.advance(12);
        assert_eq!(b.get_i16(), 4);
        b.advance(4);
        assert_eq!((b.get_i8(), b.get_i8(), b.get_i8()), (0, 0, 0)); // read-only, default, sensitive
        assert!(b.is_empty());
        assert!(decode(ApiKey::DescribeConfigs, 1, &mut Bytes::new()).is_none());
    }
}
