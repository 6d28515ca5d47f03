//! The consumer protocol's payloads inside JoinGroup and SyncGroup (Kafka's
//! `ConsumerProtocolSubscription`): opaque bytes to the group coordinator,
//! read only to learn which topics a group's members subscribe to.

/// ConsumerProtocolSubscription's topic list; None when it does not parse.
pub fn parse_subscription(md: &[u8]) -> Option<Vec<String>> {
    let mut b = md;
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h.to_vec())
    };
    let _version = take(&mut b, 2)?;
    let n = i32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let len = i16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
        let s = take(&mut b, usize::try_from(len).ok()?)?;
        out.push(String::from_utf8(s).ok()?);
    }
    Some(out)
}
