//! DescribeLogDirs (35), v1-4: each `log.dirs` entry of this broker with the
//! partitions it holds (size on disk, offset lag) and, from v4, the file
//! system's total and usable bytes. UIs and `kafka-log-dirs.sh` use it for
//! disk usage. A null topic list asks for every partition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsResponse, ResponseKind, TopicName};

use crate::protocol::Request;
use crate::server::{Ctx, Reply};

/// (total, usable) bytes of the file system holding `dir`.
fn disk_space(dir: &Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize as i64;
    Some((
        (st.f_blocks as i64).saturating_mul(block),
        (st.f_bavail as i64).saturating_mul(block),
    ))
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, DescribeLogDirs);
        let wanted: Option<BTreeMap<String, Vec<i32>>> = body.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.topic.0.to_string(), t.partitions))
                .collect()
        });
        // log dir -> topic -> partitions
        let mut by_dir: BTreeMap<PathBuf, BTreeMap<String, Vec<DescribeLogDirsPartition>>> = ctx
            .config
            .log_dirs
            .iter()
            .map(|d| (d.clone(), BTreeMap::new()))
            .collect();
        for p in ctx.broker.all_partitions().await {
            if let Some(w) = &wanted {
                if !w.get(&p.topic).is_some_and(|ps| ps.contains(&p.index)) {
                    continue;
                }
            }
            let log = p.log().clone();
            let size = tokio::task::spawn_blocking(move || log.size_and_segments())
                .await
                .ok()
                .and_then(Result::ok)
                .map_or(0, |(bytes, _)| bytes as i64);
            let dir = p
                .log()
                .dir()
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let lag = (p.high_watermark() - p.log_end_offset()).max(0);
            by_dir
                .entry(dir)
                .or_default()
                .entry(p.topic.clone())
                .or_default()
                .push(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p.index)
                        .with_partition_size(size)
                        .with_offset_lag(lag)
                        .with_is_future_key(false),
                );
        }
        let results = by_dir
            .into_iter()
            .map(|(dir, topics)| {
                let (total, usable) = disk_space(&dir).unwrap_or((-1, -1));
                let topics = topics
                    .into_iter()
                    .map(|(name, mut partitions)| {
                        partitions.sort_by_key(|p| p.partition_index);
                        DescribeLogDirsTopic::default()
                            .with_name(TopicName(super::str(name)))
                            .with_partitions(partitions)
                    })
                    .collect();
                DescribeLogDirsResult::default()
                    .with_error_code(if total < 0 {
                        ResponseError::KafkaStorageError.code()
                    } else {
                        0
                    })
                    .with_log_dir(super::str(dir.display().to_string()))
                    .with_topics(topics)
                    .with_total_bytes(total)
                    .with_usable_bytes(usable)
            })
            .collect();
        Reply::Now(ResponseKind::DescribeLogDirs(
            DescribeLogDirsResponse::default().with_results(results),
        ))
    })
}
