//! The TLS settings of a listener, with Kafka's key names, read once at
//! start: `ssl.*` for every TLS listener, and
//! `listener.name.<name>.ssl.*` for one (the listener's name in lower
//! case, as Kafka writes it), which wins over the plain key.
//!
//! Runnel reads PEM only (`ssl.keystore.type=PEM`, Kafka's PEM keystore
//! since KIP-651): a file with the private key and the certificate chain
//! (`ssl.keystore.location`), or the key in a file of its own
//! (`ssl.key.location`, librdkafka's name), or both inline
//! (`ssl.keystore.key`, `ssl.keystore.certificate.chain`). The trusted
//! CAs for client certificates: `ssl.truststore.location` or inline
//! `ssl.truststore.certificates`.

use std::fmt;
use std::path::PathBuf;

use super::{invalid, Result};

/// A listener's security protocol, as Kafka names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`),
    /// any case.
    pub fn parse(name: &str) -> Option<SecurityProtocol> {
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    /// Whether the connection is wrapped in TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn is_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The keys of a listener's TLS settings, each also accepted as
/// `listener.name.<name>.<key>`, with their defaults.
pub const SSL_KEYS: &[(&str, &str)] = &[
    ("ssl.keystore.type", "PEM"),
    ("ssl.keystore.location", ""),
    ("ssl.keystore.password", ""),
    ("ssl.keystore.key", ""),
    ("ssl.keystore.certificate.chain", ""),
    ("ssl.key.location", ""),
    ("ssl.key.password", ""),
    ("ssl.truststore.type", "PEM"),
    ("ssl.truststore.location", ""),
    ("ssl.truststore.password", ""),
    ("ssl.truststore.certificates", ""),
    ("ssl.client.auth", "none"),
    ("ssl.protocol", "TLSv1.3"),
    ("ssl.enabled.protocols", "TLSv1.2,TLSv1.3"),
    ("ssl.cipher.suites", ""),
    ("ssl.principal.mapping.rules", "DEFAULT"),
    ("ssl.endpoint.identification.algorithm", "https"),
];

/// Whether the value of `key` is a secret (a password, a private key):
/// DescribeConfigs answers it as sensitive, with no value.
pub fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.ends_with(".password")
        || key.ends_with("ssl.keystore.key")
        || key.ends_with("sasl.jaas.config")
}

/// Whether a client must present a certificate (`ssl.client.auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// A TLS protocol version of `ssl.enabled.protocols`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// Where a PEM item comes from: a file, or the key's value itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pem {
    File { key: String, path: PathBuf },
    Inline { key: String, text: String },
}

impl Pem {
    /// The config key it was given under (for errors).
    pub fn key(&self) -> &str {
        match self {
            Pem::File { key, .. } | Pem::Inline { key, .. } => key,
        }
    }
}

/// One listener's TLS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub listener: String,
    /// The certificate chain, leaf first.
    pub certificates: Pem,
    /// The private key (the same file as the chain when no key of its own
    /// is given).
    pub key: Pem,
    /// The CAs that client certificates must chain to.
    pub truststore: Option<Pem>,
    pub client_auth: ClientAuth,
    pub versions: Vec<TlsVersion>,
    /// IANA names (`TLS_AES_128_GCM_SHA256`, …); empty: rustls's defaults.
    pub cipher_suites: Vec<String>,
    pub principal_rules: PrincipalRules,
}

/// The full key of `key` for `listener`: `listener.name.<name>.<key>`.
pub fn listener_key(listener: &str, key: &str) -> String {
    format!("listener.name.{}.{key}", listener.to_ascii_lowercase())
}

/// `listener.name.<name>.<ssl key>` as (NAME, ssl key), the name upper
/// cased as in `listeners`.
pub fn listener_key_parts(key: &str) -> Option<(String, &'static str)> {
    let rest = key.strip_prefix("listener.name.")?;
    SSL_KEYS.iter().find_map(|(k, _)| {
        let name = rest.strip_suffix(k)?.strip_suffix('.')?;
        (!name.is_empty()).then(|| (name.to_ascii_uppercase(), *k))
    })
}

/// Reads the TLS settings of `listener`; `get(key)` is the value given
/// for `key` (or its default), `None` when neither.
pub fn tls_settings(listener: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<TlsSettings> {
    // The listener's own key wins; the value and the key it came from.
    let read = |key: &str| -> (String, String) {
        let own = listener_key(listener, key);
        match get(&own) {
            Some(v) => (own, v.trim().to_string()),
            None => {
                let v = get(key).unwrap_or_else(|| {
                    SSL_KEYS
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or(String::new(), |(_, d)| d.to_string())
                });
                (key.to_string(), v.trim().to_string())
            }
        }
    };
    for kind in ["ssl.keystore.type", "ssl.truststore.type"] {
        let (k, v) = read(kind);
        if !v.is_empty() && !v.eq_ignore_ascii_case("PEM") {
            return Err(invalid(
                &k,
                &v,
                "Runnel reads PEM only: set PEM and give PEM files \
                 (`openssl pkcs12 -in store.p12 -nodes` converts a PKCS12 store)",
            ));
        }
    }
    let (pw_key, pw) = read("ssl.key.password");
    if !pw.is_empty() {
        return Err(invalid(
            &pw_key,
            "(hidden)",
            "encrypted private keys are not supported; decrypt the key \
             (`openssl pkey -in key.pem -out plain.pem`) and protect the file",
        ));
    }
    let pem = |file_key: &str, inline_key: &str| -> Option<Pem> {
        let (fk, f) = read(file_key);
        let (ik, i) = read(inline_key);
        if !f.is_empty() {
            Some(Pem::File {
                key: fk,
                path: PathBuf::from(f),
            })
        } else if !i.is_empty() {
            Some(Pem::Inline { key: ik, text: i })
        } else {
            None
        }
    };
    let certificates =
        pem("ssl.keystore.location", "ssl.keystore.certificate.chain").ok_or_else(|| {
            invalid(
                &listener_key(listener, "ssl.keystore.location"),
                "",
                format!(
                    "listener {listener} speaks TLS and needs a certificate: set \
                     ssl.keystore.location (a PEM file with the key and the chain) or \
                     ssl.keystore.certificate.chain"
                ),
            )
        })?;
    let key = match pem("ssl.key.location", "ssl.keystore.key") {
        Some(k) => k,
        None => certificates.clone(),
    };
    let truststore = pem("ssl.truststore.location", "ssl.truststore.certificates");
    let (ca_key, ca) = read("ssl.client.auth");
    let client_auth = match ca.to_ascii_lowercase().as_str() {
        "" | "none" => ClientAuth::None,
        "requested" => ClientAuth::Requested,
        "required" => ClientAuth::Required,
        _ => {
            return Err(invalid(
                &ca_key,
                &ca,
                "expected none, requested or required",
            ))
        }
    };
    if client_auth != ClientAuth::None && truststore.is_none() {
        return Err(invalid(
            &ca_key,
            &ca,
            "client certificates need the CAs they chain to: set ssl.truststore.location",
        ));
    }
    let (vk, v) = read("ssl.enabled.protocols");
    let mut versions = Vec::new();
    for p in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match p {
            "TLSv1.2" => versions.push(TlsVersion::Tls12),
            "TLSv1.3" => versions.push(TlsVersion::Tls13),
            // Kafka's older defaults listed these; rustls has neither.
            "TLSv1" | "TLSv1.1" => {}
            _ => {
                return Err(invalid(
                    &vk,
                    &v,
                    format!("unknown protocol {p:?} (TLSv1.2, TLSv1.3)"),
                ))
            }
        }
    }
    versions.sort();
    versions.dedup();
    if versions.is_empty() {
        return Err(invalid(
            &vk,
            &v,
            "no protocol Runnel speaks: list TLSv1.2 and/or TLSv1.3",
        ));
    }
    let (_, suites) = read("ssl.cipher.suites");
    let cipher_suites = suites
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let (rk, rules) = read("ssl.principal.mapping.rules");
    let principal_rules = PrincipalRules::parse(&rules).map_err(|why| invalid(&rk, &rules, why))?;
    Ok(TlsSettings {
        listener: listener.to_string(),
        certificates,
        key,
        truststore,
        client_auth,
        versions,
        cipher_suites,
        principal_rules,
    })
}

/// `ssl.principal.mapping.rules` (KIP-371): how a client certificate's
/// distinguished name (RFC 2253, `CN=alice,OU=eng,O=Acme`) becomes a user
/// name. Rules are tried in order; the first that applies wins:
/// `RULE:pattern/replacement/` applies when the pattern matches the whole
/// name (with `L` or `U` after the last slash, the result is lower or
/// upper cased), `DEFAULT` takes the name as it is. When none applies
/// the client is refused.
#[derive(Clone, Debug)]
pub struct PrincipalRules(Vec<Rule>);

impl PartialEq for PrincipalRules {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| a.same(b))
    }
}

impl Eq for PrincipalRules {}

#[derive(Clone, Debug)]
enum Rule {
    Default,
    Replace {
        pattern: regex::Regex,
        replacement: String,
        case: Case,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

impl Rule {
    fn same(&self, other: &Rule) -> bool {
        match (self, other) {
            (Rule::Default, Rule::Default) => true,
            (
                Rule::Replace {
                    pattern: p,
                    replacement: r,
                    case: c,
                },
                Rule::Replace {
                    pattern: q,
                    replacement: s,
                    case: d,
                },
            ) => p.as_str() == q.as_str() && r == s && c == d,
            _ => false,
        }
    }
}

impl PrincipalRules {
    /// Parses the rules; an error says what is wrong.
    pub fn parse(text: &str) -> std::result::Result<PrincipalRules, String> {
        let mut rules = Vec::new();
        let mut rest = text.trim();
        if rest.is_empty() {
            return Ok(PrincipalRules(vec![Rule::Default]));
        }
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after)
                    .ok_or_else(|| format!("rule {rest:?}: no '/' after the pattern"))?;
                let (replacement, after) = until_slash(after)
                    .ok_or_else(|| format!("rule {rest:?}: no '/' after the replacement"))?;
                let (case, after) = match after.chars().next() {
                    Some('L') => (Case::Lower, &after[1..]),
                    Some('U') => (Case::Upper, &after[1..]),
                    _ => (Case::Keep, after),
                };
                let pattern = regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("rule pattern {pattern:?}: {e}"))?;
                rules.push(Rule::Replace {
                    pattern,
                    replacement: java_replacement(&replacement),
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "{rest:?} is not a rule (RULE:pattern/replacement/[LU] or DEFAULT)"
                ));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("expected ',' between rules at {rest:?}")),
            }
        }
        Ok(PrincipalRules(rules))
    }

    /// The user name for `dn`, or `None` when no rule applies.
    pub fn apply(&self, dn: &str) -> Option<String> {
        self.0.iter().find_map(|r| match r {
            Rule::Default => Some(dn.to_string()),
            Rule::Replace {
                pattern,
                replacement,
                case,
            } => {
                let caps = pattern.captures(dn)?;
                let mut out = String::new();
                caps.expand(replacement, &mut out);
                Some(match case {
                    Case::Keep => out,
                    Case::Lower => out.to_lowercase(),
                    Case::Upper => out.to_uppercase(),
                })
            }
        })
    }
}

/// The text up to the first unescaped '/', with `\/` read as '/', and
/// what follows the slash.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// A Java `replaceAll` replacement (`$1`, `\$`) as a `regex` one (`${1}`,
/// `$$`).
fn java_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => {}
            },
            '$' => {
                let mut group = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    group.push(*d);
                    chars.next();
                }
                if group.is_empty() {
                    out.push_str("$$");
                } else {
                    out.push_str(&format!("${{{group}}}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<TlsSettings> {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tls_settings("SSL", &|k| map.get(k).cloned())
    }

    #[test]
    fn kip_371_examples_map_names() {
        let rules = PrincipalRules::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U, DEFAULT",
        )
        .unwrap();
        assert_eq!(
            rules
                .apply("CN=kafka-monitor,OU=ServiceUsers,O=Apache,L=Unknown,ST=Unknown,C=Unknown")
                .as_deref(),
            Some("kafka-monitor")
        );
        assert_eq!(
            rules
                .apply("CN=Duke,OU=JavaSoft,O=Sun Microsystems,L=Unknown,ST=Unknown,C=Unknown")
                .as_deref(),
            Some("duke@javasoft")
        );
        assert_eq!(
            rules.apply("cn=duke,ou=javasoft,dc=sun,dc=com").as_deref(),
            Some("DUKE@JAVASOFT")
        );
        assert_eq!(rules.apply("CN=other").as_deref(), Some("CN=other"));
    }

    #[test]
    fn without_default_an_unmatched_name_is_refused() {
        let rules = PrincipalRules::parse("RULE:^CN=([^,]*).*$/$1/").unwrap();
        assert_eq!(rules.apply("CN=alice,O=Acme").as_deref(), Some("alice"));
        assert_eq!(rules.apply("O=Acme"), None);
    }

    #[test]
    fn slashes_escape_and_bad_rules_say_why() {
        let rules = PrincipalRules::parse(r"RULE:^CN=a\/b$/x\/y/").unwrap();
        assert_eq!(rules.apply("CN=a/b").as_deref(), Some("x/y"));
        assert!(PrincipalRules::parse("RULE:^CN=(.*)$")
            .unwrap_err()
            .contains("'/'"));
        assert!(PrincipalRules::parse("NOPE")
            .unwrap_err()
            .contains("not a rule"));
        assert!(PrincipalRules::parse("RULE:(/x/")
            .unwrap_err()
            .contains("pattern"));
    }

    #[test]
    fn a_keystore_file_holds_key_and_chain_and_listener_keys_win() {
        let s = settings(&[
            ("ssl.keystore.location", "/etc/a.pem"),
            ("listener.name.ssl.ssl.keystore.location", "/etc/b.pem"),
        ])
        .unwrap();
        let b = Pem::File {
            key: "listener.name.ssl.ssl.keystore.location".into(),
            path: "/etc/b.pem".into(),
        };
        assert_eq!(s.certificates, b);
        assert_eq!(s.key, b);
        assert_eq!(s.client_auth, ClientAuth::None);
        assert_eq!(s.versions, vec![TlsVersion::Tls12, TlsVersion::Tls13]);
    }

    #[test]
    fn secrets_are_sensitive() {
        for k in [
            "ssl.key.password",
            "listener.name.ssl.ssl.keystore.key",
            "ssl.truststore.password",
            "listener.name.sasl_ssl.plain.sasl.jaas.config",
        ] {
            assert!(is_sensitive(k), "{k}");
        }
        for k in [
            "ssl.keystore.location",
            "ssl.client.auth",
            "log.retention.ms",
        ] {
            assert!(!is_sensitive(k), "{k}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = settings(&[]).unwrap_err().to_string();
        assert!(e.contains("listener.name.ssl.ssl.keystore.location"), "{e}");
        let e = settings(&[
            ("ssl.keystore.location", "/a"),
            ("ssl.client.auth", "maybe"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("ssl.client.auth"), "{e}");
        let e = settings(&[
            ("ssl.keystore.location", "/a"),
            ("ssl.client.auth", "required"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("ssl.truststore.location"), "{e}");
        let e = settings(&[
            ("ssl.keystore.location", "/a"),
            ("ssl.keystore.type", "JKS"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("ssl.keystore.type"), "{e}");
        let e = settings(&[
            ("ssl.keystore.location", "/a"),
            ("ssl.enabled.protocols", "TLSv1.1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("ssl.enabled.protocols"), "{e}");
        let e = settings(&[
            ("ssl.keystore.location", "/a"),
            ("ssl.key.password", "secret"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ssl.key.password") && !e.contains("secret"),
            "{e}"
        );
    }
}
