//! The principal a connection acts as, Kafka's `User:<name>`.
//!
//! On a TLS listener with a client certificate the name is the
//! certificate's subject as an RFC 2253 distinguished name
//! (`CN=alice,OU=eng,O=Acme,C=US`, the last RDN first, as Java's
//! `X500Principal.getName()` writes it), mapped by
//! `ssl.principal.mapping.rules`; without one it is `ANONYMOUS`, as in
//! Kafka.

use std::fmt::Write;

use crate::config::security::PrincipalRules;

/// Kafka's principal for a client that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// The principal of a client certificate (DER), or why there is none.
pub fn of_certificate(der: &[u8], rules: &PrincipalRules) -> Result<String, String> {
    let dn = subject_rfc2253(der).ok_or("cannot read the subject of the client certificate")?;
    rules
        .apply(&dn)
        .map(|name| format!("User:{name}"))
        .ok_or_else(|| format!("no ssl.principal.mapping.rules rule applies to {dn:?}"))
}

/// One DER element: (tag, content, the whole element).
type Element<'a> = (u8, &'a [u8], &'a [u8]);

/// One DER element, and what follows it.
/// Only what X.509 names use: low tag numbers, definite lengths up to
/// 2^32; `None` on anything else or a length past the input.
fn tlv(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some(((tag, &rest[..len], &input[..header + len]), &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// The subject of a certificate (DER) as RFC 2253 writes it.
pub fn subject_rfc2253(cert: &[u8]) -> Option<String> {
    let ((SEQUENCE, cert, _), _) = tlv(cert)? else {
        return None;
    };
    let ((SEQUENCE, tbs, _), _) = tlv(cert)? else {
        return None;
    };
    let mut fields = tbs;
    // version [0] (optional), serial, signature algorithm, issuer,
    // validity, then the subject.
    let ((tag, _, _), rest) = tlv(fields)?;
    if tag == 0xa0 {
        fields = rest;
    }
    for _ in 0..4 {
        fields = tlv(fields)?.1;
    }
    let ((SEQUENCE, name, _), _) = tlv(fields)? else {
        return None;
    };
    rfc2253(name)
}

/// The content of a Name (a SEQUENCE of RDNs) as RFC 2253 writes it: the
/// last RDN first, `+` between the attributes of one.
fn rfc2253(mut name: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let ((SET, mut rdn, _), rest) = tlv(name)? else {
            return None;
        };
        name = rest;
        let mut attrs = Vec::new();
        while !rdn.is_empty() {
            let ((SEQUENCE, atv, _), rest) = tlv(rdn)? else {
                return None;
            };
            rdn = rest;
            let ((OID, oid, _), value) = tlv(atv)? else {
                return None;
            };
            let ((vtag, content, whole), _) = tlv(value)?;
            let oid = dotted(oid)?;
            let mut out = keyword(&oid).unwrap_or(&oid).to_string();
            out.push('=');
            match string(vtag, content) {
                Some(v) => escape(&v, &mut out),
                None => {
                    out.push('#');
                    for b in whole {
                        let _ = write!(out, "{b:02x}");
                    }
                }
            }
            attrs.push(out);
        }
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// An OID's content as dotted numbers.
fn dotted(oid: &[u8]) -> Option<String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for (i, b) in oid.iter().enumerate() {
        acc = acc.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        } else if i == oid.len() - 1 {
            return None;
        }
    }
    if arcs.is_empty() {
        return None;
    }
    Some(
        arcs.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// The text of a directory string; `None` for other types (written as
/// hex, as Java does).
fn string(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, NumericString
        0x0c | 0x13 | 0x16 | 0x12 => String::from_utf8(content.to_vec()).ok(),
        // TeletexString, read as Latin-1
        0x14 => Some(content.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UCS-2, big-endian
        0x1e if content.len() % 2 == 0 => {
            let units: Vec<u16> = content
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// RFC 2253's keywords (those Java writes by name).
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn escape(v: &str, out: &mut String) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Name of three RDNs, the middle one with two attributes, and a
    /// value that needs escaping.
    #[test]
    fn a_name_is_written_last_rdn_first() {
        fn atv(oid: &[u8], tag: u8, v: &str) -> Vec<u8> {
            let mut inner = vec![0x06, oid.len() as u8];
            inner.extend_from_slice(oid);
            inner.extend([tag, v.len() as u8]);
            inner.extend_from_slice(v.as_bytes());
            let mut out = vec![0x30, inner.len() as u8];
            out.extend(inner);
            out
        }
        fn set(atvs: &[Vec<u8>]) -> Vec<u8> {
            let inner: Vec<u8> = atvs.concat();
            let mut out = vec![0x31, inner.len() as u8];
            out.extend(inner);
            out
        }
        let (cn, o, ou) = (
            &[0x55, 0x04, 0x03][..],
            &[0x55, 0x04, 0x0a][..],
            &[0x55, 0x04, 0x0b][..],
        );
        let name = [
            set(&[atv(o, 0x13, "Acme, Inc")]),
            set(&[atv(ou, 0x0c, "eng"), atv(&[0x2a, 0x03], 0x02, "x")]),
            set(&[atv(cn, 0x0c, "alice")]),
        ]
        .concat();
        assert_eq!(
            rfc2253(&name).as_deref(),
            Some(r"CN=alice,OU=eng+1.2.3=#020178,O=Acme\, Inc")
        );
        assert_eq!(rfc2253(&name[..name.len() - 1]), None, "cut short");
    }

    #[test]
    fn values_are_escaped_as_rfc_2253_says() {
        let mut s = String::new();
        escape("#a, b+c ", &mut s);
        assert_eq!(s, r"\#a\, b\+c\ ");
    }
}
