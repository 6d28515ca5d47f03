//! TLS for a listener: a rustls server configuration built from the
//! listener's [`TlsSettings`], rebuilt when its files change.
//!
//! The files are looked at every [`RELOAD_CHECK`]: when the size or the
//! modification time of one changed, the configuration is built again and,
//! if that works, new connections get it (connections already open keep
//! theirs, as in Kafka). If it fails (a certificate written before its
//! key, say) the old one stays, with a warning, and the next change is
//! tried again.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};

use crate::config::security::{ClientAuth, Pem, TlsSettings, TlsVersion};

/// How often the certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("TLS listener {listener}: {key}: {why}")]
pub struct TlsError {
    listener: String,
    key: String,
    why: String,
}

/// (path, size, modified) of a file the configuration was built from.
type Stamp = (PathBuf, u64, Option<SystemTime>);

/// A listener's TLS acceptor, with the configuration it hands out now.
pub struct Acceptor {
    settings: TlsSettings,
    current: RwLock<(Arc<ServerConfig>, Vec<Stamp>)>,
}

impl Acceptor {
    /// Builds the configuration; an error names the key whose file or
    /// value is wrong.
    pub fn new(settings: TlsSettings) -> Result<Arc<Acceptor>, TlsError> {
        let (config, stamps) = build(&settings)?;
        Ok(Arc::new(Acceptor {
            settings,
            current: RwLock::new((config, stamps)),
        }))
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// How user names come from client certificates.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Rebuilds the configuration if a file changed since it was built:
    /// `Some(result)` when it tried.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let stamps_now = stamps(&self.settings);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.1 == stamps_now {
                return None;
            }
        }
        let result = build(&self.settings);
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        Some(match result {
            Ok((config, stamps)) => {
                *current = (config, stamps);
                Ok(())
            }
            Err(e) => {
                // Not again until the files change again.
                current.1 = stamps_now;
                Err(e)
            }
        })
    }

    /// Checks the files every [`RELOAD_CHECK`] for as long as the acceptor
    /// is in use.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_CHECK);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(acceptor) = weak.upgrade() else {
                    return;
                };
                let listener = acceptor.settings.listener.clone();
                match acceptor.reload_if_changed() {
                    None => {}
                    Some(Ok(())) => {
                        metrics::counter!("runnel_tls_reloads_total", "listener" => listener.clone(), "result" => "ok").increment(1);
                        tracing::info!(%listener, "TLS certificates changed on disk: reloaded; new connections get them");
                    }
                    Some(Err(e)) => {
                        metrics::counter!("runnel_tls_reloads_total", "listener" => listener.clone(), "result" => "failed").increment(1);
                        tracing::warn!(%listener, error = %e, "TLS certificates changed on disk but cannot be loaded; keeping the ones in use");
                    }
                }
            }
        });
    }
}

fn stamps(s: &TlsSettings) -> Vec<Stamp> {
    let mut paths: Vec<&PathBuf> = Vec::new();
    for pem in [Some(&s.certificates), Some(&s.key), s.truststore.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Pem::File { path, .. } = pem {
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let md = std::fs::metadata(p).ok();
            (
                p.clone(),
                md.as_ref().map_or(0, |m| m.len()),
                md.and_then(|m| m.modified().ok()),
            )
        })
        .collect()
}

fn build(s: &TlsSettings) -> Result<(Arc<ServerConfig>, Vec<Stamp>), TlsError> {
    // The stamps first: a file that changes while it is read is read again
    // at the next check.
    let stamps = stamps(s);
    let err = |key: &str, why: String| TlsError {
        listener: s.listener.clone(),
        key: key.to_string(),
        why,
    };
    let read = |pem: &Pem| -> Result<Vec<u8>, TlsError> {
        match pem {
            Pem::File { key, path } => std::fs::read(path)
                .map_err(|e| err(key, format!("cannot read {}: {e}", path.display()))),
            Pem::Inline { text, .. } => Ok(text.clone().into_bytes()),
        }
    };
    let chain_pem = read(&s.certificates)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(s.certificates.key(), format!("bad PEM certificate: {e:?}")))?;
    if chain.is_empty() {
        return Err(err(s.certificates.key(), "no PEM certificate in it".into()));
    }
    let key_pem = read(&s.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let encrypted = String::from_utf8_lossy(&key_pem).contains("ENCRYPTED");
        err(
            s.key.key(),
            if encrypted {
                "the private key is encrypted, which Runnel does not read: decrypt it \
                 (`openssl pkey -in key.pem -out plain.pem`) and protect the file"
                    .into()
            } else {
                format!("no PEM private key in it: {e:?}")
            },
        )
    })?;
    let mut provider = ring::default_provider();
    if !s.cipher_suites.is_empty() {
        let all = provider.cipher_suites.clone();
        let mut chosen = Vec::new();
        for name in &s.cipher_suites {
            let found = all.iter().find(|suite| {
                let ours = format!("{:?}", suite.suite());
                ours == *name || ours.replacen("TLS13_", "TLS_", 1) == *name
            });
            match found {
                Some(suite) => chosen.push(*suite),
                None => {
                    let known: Vec<String> = all
                        .iter()
                        .map(|s| format!("{:?}", s.suite()).replacen("TLS13_", "TLS_", 1))
                        .collect();
                    return Err(err(
                        "ssl.cipher.suites",
                        format!(
                            "unknown or unsupported suite {name}; known: {}",
                            known.join(",")
                        ),
                    ));
                }
            }
        }
        provider.cipher_suites = chosen;
    }
    let provider = Arc::new(provider);
    let versions: Vec<&'static SupportedProtocolVersion> = s
        .versions
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| {
            err(
                "ssl.enabled.protocols",
                format!("{e} (with ssl.cipher.suites)"),
            )
        })?;
    let builder = match (&s.client_auth, &s.truststore) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(trust)) => {
            let pem = read(trust)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| err(trust.key(), format!("bad PEM certificate: {e:?}")))?;
                roots
                    .add(cert)
                    .map_err(|e| err(trust.key(), format!("not a usable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(err(trust.key(), "no PEM certificate in it".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if *auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| err(trust.key(), format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        err(
            s.key.key(),
            format!("the key does not fit the certificate: {e}"),
        )
    })?;
    Ok((Arc::new(config), stamps))
}
