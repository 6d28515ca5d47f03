//! `meta.properties`: the file in every data directory that says which
//! cluster and node it belongs to, written by `runnel format` (or by a
//! single node's first start) and checked at every start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE: &str = "meta.properties";

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is missing {key}")]
    Missing { path: PathBuf, key: &'static str },
    #[error("{path} is already formatted for cluster {cluster_id} (node {node_id}); use --ignore-formatted to leave it as it is")]
    AlreadyFormatted {
        path: PathBuf,
        cluster_id: String,
        node_id: i32,
    },
    #[error("{path} belongs to cluster {found}, not {expected}")]
    ClusterMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path} belongs to node {found}, but node.id is {expected}")]
    NodeMismatch {
        path: PathBuf,
        found: i32,
        expected: i32,
    },
    #[error(
        "{0} is not formatted: run `runnel format --cluster-id <id>` with this configuration first"
    )]
    NotFormatted(PathBuf),
    #[error("cluster id {0:?} is not valid: use letters, digits, - and _ (`runnel random-uuid` makes one)")]
    BadClusterId(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaProperties {
    pub cluster_id: String,
    pub node_id: i32,
    pub directory_id: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MetaError + '_ {
    move |source| MetaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Kafka prints cluster ids as URL-safe base64 of a UUID without padding.
pub fn uuid_to_kafka_string(id: uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 0x3f) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 0x3f) as usize] as char);
    }
    out
}

/// A random id in Kafka's base64 form. Like Kafka's `Uuid.randomUuid`, it
/// never starts with `-`, so that it can follow a flag on a command line
/// (`runnel format --cluster-id -n…` would read it as a flag).
pub fn random_cluster_id() -> String {
    loop {
        let id = uuid_to_kafka_string(uuid::Uuid::new_v4());
        if !id.starts_with('-') {
            return id;
        }
    }
}

pub fn read(dir: &Path) -> Result<Option<MetaProperties>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let map: BTreeMap<String, String> = crate::config::parse_properties(&text);
    let get = |key: &'static str| {
        map.get(key).cloned().ok_or(MetaError::Missing {
            path: path.clone(),
            key,
        })
    };
    Ok(Some(MetaProperties {
        cluster_id: get("cluster.id")?,
        node_id: get("node.id")?.parse().map_err(|_| MetaError::Missing {
            path: path.clone(),
            key: "node.id",
        })?,
        directory_id: map.get("directory.id").cloned().unwrap_or_default(),
    }))
}

/// Writes atomically: temp file, fsync, rename, fsync the directory.
pub fn write(dir: &Path, meta: &MetaProperties) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let text = format!(
        "#\n#Written by runnel format\nversion=1\ncluster.id={}\nnode.id={}\ndirectory.id={}\n",
        meta.cluster_id, meta.node_id, meta.directory_id
    );
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// Formats every directory for (cluster, node). A directory that is already
/// formatted is an error unless `ignore_formatted`, and then only if it
/// matches.
pub fn format(
    dirs: &[PathBuf],
    cluster_id: &str,
    node_id: i32,
    ignore_formatted: bool,
) -> Result<()> {
    validate_cluster_id(cluster_id)?;
    for dir in dirs {
        if let Some(m) = read(dir)? {
            if !ignore_formatted {
                return Err(MetaError::AlreadyFormatted {
                    path: dir.clone(),
                    cluster_id: m.cluster_id,
                    node_id: m.node_id,
                });
            }
            check(dir, &m, Some(cluster_id), node_id)?;
            continue;
        }
        write(
            dir,
            &MetaProperties {
                cluster_id: cluster_id.to_string(),
                node_id,
                directory_id: random_cluster_id(),
            },
        )?;
    }
    Ok(())
}

pub fn validate_cluster_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(MetaError::BadClusterId(id.to_string()))
    }
}

fn check(dir: &Path, m: &MetaProperties, cluster_id: Option<&str>, node_id: i32) -> Result<()> {
    if let Some(expected) = cluster_id {
        if m.cluster_id != expected {
            return Err(MetaError::ClusterMismatch {
                path: dir.to_path_buf(),
                found: m.cluster_id.clone(),
                expected: expected.to_string(),
            });
        }
    }
    if m.node_id != node_id {
        return Err(MetaError::NodeMismatch {
            path: dir.to_path_buf(),
            found: m.node_id,
            expected: node_id,
        });
    }
    Ok(())
}

/// Checks every directory at start and returns the cluster id they agree on.
/// Unformatted directories are formatted when `auto_format` (a one-node
/// cluster) with the id they agree on, else `fallback_id`.
pub fn ensure(dirs: &[PathBuf], node_id: i32, auto_format: Option<&str>) -> Result<String> {
    let mut cluster: Option<String> = None;
    let mut unformatted = Vec::new();
    for dir in dirs {
        match read(dir)? {
            Some(m) => {
                check(dir, &m, cluster.as_deref(), node_id)?;
                cluster = Some(m.cluster_id);
            }
            None => unformatted.push(dir.clone()),
        }
    }
    if unformatted.is_empty() {
        if let Some(c) = cluster {
            return Ok(c);
        }
    }
    match auto_format {
        Some(fallback) => {
            let id = cluster.unwrap_or_else(|| fallback.to_string());
            format(&unformatted, &id, node_id, false)?;
            Ok(id)
        }
        None => Err(MetaError::NotFormatted(unformatted[0].clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_uuid_strings_are_22_chars() {
        let s = uuid_to_kafka_string(uuid::Uuid::nil());
        assert_eq!(s, "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(random_cluster_id().len(), 22);
        // One id in 64 would start with '-' if nothing stopped it.
        assert!((0..2000).all(|_| !random_cluster_id().starts_with('-')));
    }

    #[test]
    fn format_then_ensure() {
        let t = tempfile::tempdir().unwrap();
        let dirs = vec![t.path().join("a"), t.path().join("b")];
        format(&dirs, "abc", 1, false).unwrap();
        assert_eq!(ensure(&dirs, 1, None).unwrap(), "abc");
        assert!(matches!(
            format(&dirs, "abc", 1, false),
            Err(MetaError::AlreadyFormatted { .. })
        ));
        format(&dirs, "abc", 1, true).unwrap();
        assert!(matches!(
            format(&dirs, "xyz", 1, true),
            Err(MetaError::ClusterMismatch { .. })
        ));
        assert!(matches!(
            ensure(&dirs, 2, None),
            Err(MetaError::NodeMismatch { .. })
        ));
    }

    #[test]
    fn unformatted_dirs_need_format_unless_single_node() {
        let t = tempfile::tempdir().unwrap();
        let dirs = vec![t.path().join("a")];
        assert!(matches!(
            ensure(&dirs, 1, None),
            Err(MetaError::NotFormatted(_))
        ));
        assert_eq!(ensure(&dirs, 1, Some("fresh")).unwrap(), "fresh");
        assert_eq!(ensure(&dirs, 1, Some("other")).unwrap(), "fresh");
    }
}
