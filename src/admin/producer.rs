//! `console-producer`: one record per stdin line, parsed like Kafka's
//! `LineMessageReader`, partitioned like Kafka's default partitioner, and
//! sent in small batches (a few ms of linger) as RecordBatch v2.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use super::client::Client;
use super::murmur2::partition_for_key;
use super::{now_ms, Error, Result};
use crate::protocol::build;

/// How long to wait for the topic to appear (Kafka's max.block.ms).
const MAX_BLOCK: Duration = Duration::from_secs(60);

/// How stdin lines become records (`LineMessageReader` properties).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LineReader {
    pub parse_key: bool,
    pub key_separator: String,
    pub parse_headers: bool,
    pub headers_delimiter: String,
    pub headers_separator: String,
    pub headers_key_separator: String,
    pub ignore_error: bool,
    pub null_marker: Option<String>,
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader {
            parse_key: false,
            key_separator: "\t".to_owned(),
            parse_headers: false,
            headers_delimiter: "\t".to_owned(),
            headers_separator: ",".to_owned(),
            headers_key_separator: ":".to_owned(),
            ignore_error: false,
            null_marker: None,
        }
    }
}

/// One parsed input line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LineRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl LineReader {
    /// Applies `--property` pairs; unknown keys are ignored as in Kafka.
    pub fn from_properties(props: &[(String, String)]) -> Self {
        let mut r = LineReader::default();
        let flag = |v: &str| v.trim().eq_ignore_ascii_case("true");
        for (k, v) in props {
            match k.as_str() {
                "parse.key" => r.parse_key = flag(v),
                "key.separator" => r.key_separator = v.clone(),
                "parse.headers" => r.parse_headers = flag(v),
                "headers.delimiter" => r.headers_delimiter = v.clone(),
                "headers.separator" => r.headers_separator = v.clone(),
                "headers.key.separator" => r.headers_key_separator = v.clone(),
                "ignore.error" => r.ignore_error = flag(v),
                "null.marker" => r.null_marker = Some(v.clone()).filter(|m| !m.is_empty()),
                _ => {}
            }
        }
        r
    }

    fn is_null(&self, s: &str) -> bool {
        self.null_marker.as_deref() == Some(s)
    }

    /// Cuts `line[start..]` at `sep` when `enabled`, Kafka's `parse` helper.
    fn cut<'a>(
        &self,
        enabled: bool,
        line: &'a str,
        start: usize,
        sep: &str,
        what: &str,
        number: u64,
    ) -> Result<Option<&'a str>, String> {
        if !enabled {
            return Ok(None);
        }
        match line[start..].find(sep) {
            Some(i) => Ok(Some(&line[start..start + i])),
            None if self.ignore_error => Ok(None),
            None => Err(format!("No {what} found on line number {number}: '{line}'")),
        }
    }

    /// Parses line `number` (1-based, for error messages).
    pub fn parse(&self, line: &str, number: u64) -> Result<LineRecord, String> {
        let headers = self.cut(
            self.parse_headers,
            line,
            0,
            &self.headers_delimiter,
            "headers delimiter",
            number,
        )?;
        let header_end = headers.map_or(0, |h| h.len() + self.headers_delimiter.len());
        let key = self.cut(
            self.parse_key,
            line,
            header_end,
            &self.key_separator,
            "key separator",
            number,
        )?;
        let key_end = key.map_or(0, |k| k.len() + self.key_separator.len());
        let value = &line[header_end + key_end..];
        let bytes = |s: &str| {
            if self.is_null(s) {
                None
            } else {
                Some(Bytes::from(s.to_owned()))
            }
        };
        let mut parsed_headers = Vec::new();
        if let Some(h) = headers.filter(|h| !self.is_null(h)) {
            for pair in h.split(self.headers_separator.as_str()) {
                let Some(i) = pair.find(self.headers_key_separator.as_str()) else {
                    if self.ignore_error {
                        parsed_headers.push((pair.to_owned(), None));
                        continue;
                    }
                    return Err(format!(
                        "No header key separator found in pair '{pair}' on line number {number}"
                    ));
                };
                let k = &pair[..i];
                if self.is_null(k) {
                    return Err(format!(
                        "Header keys should not be equal to the null marker '{k}' as they can't be null"
                    ));
                }
                let v = bytes(&pair[i + self.headers_key_separator.len()..]);
                parsed_headers.push((k.to_owned(), v));
            }
        }
        Ok(LineRecord {
            key: key.and_then(bytes),
            value: bytes(value),
            headers: parsed_headers,
        })
    }
}

/// Producer settings from the command line.
#[derive(Clone, Debug)]
pub(crate) struct ProduceOptions {
    pub topic: String,
    pub acks: i16,
    pub linger: Duration,
    pub batch_size: usize,
    pub compression: Compression,
    pub sync: bool,
}

/// Picks partitions like Kafka's default partitioner: murmur2 of the key,
/// or round robin for records without a key. The round robin starts at a
/// random partition, so that one-line invocations spread out.
#[derive(Debug)]
pub(crate) struct Partitioner {
    next: u32,
}

impl Default for Partitioner {
    fn default() -> Self {
        Partitioner {
            next: rand::random::<u16>() as u32,
        }
    }
}

impl Partitioner {
    pub fn partition(&mut self, key: Option<&[u8]>, partitions: i32) -> i32 {
        match key {
            Some(k) => partition_for_key(k, partitions),
            None => {
                let p = (self.next % partitions.max(1) as u32) as i32;
                self.next = self.next.wrapping_add(1);
                p
            }
        }
    }
}

/// Records waiting for the next send, by partition.
#[derive(Default)]
struct Pending {
    by_partition: BTreeMap<i32, Vec<Record>>,
    bytes_by_partition: BTreeMap<i32, usize>,
    since: Option<Instant>,
}

impl Pending {
    fn push(&mut self, partition: i32, r: LineRecord) -> usize {
        let size = r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len);
        let list = self.by_partition.entry(partition).or_default();
        let mut record = build::record(list.len() as i64, now_ms(), r.key, r.value);
        for (k, v) in r.headers {
            record.headers.insert(StrBytes::from_string(k), v);
        }
        list.push(record);
        self.since.get_or_insert_with(Instant::now);
        let total = self.bytes_by_partition.entry(partition).or_default();
        *total += size;
        *total
    }

    fn is_empty(&self) -> bool {
        self.by_partition.is_empty()
    }

    fn take(&mut self) -> BTreeMap<i32, Vec<Record>> {
        self.bytes_by_partition.clear();
        self.since = None;
        std::mem::take(&mut self.by_partition)
    }
}

/// Waits until Metadata lists `topic` with partitions (auto-creating it if
/// the broker allows), as Kafka's producer blocks up to max.block.ms.
async fn wait_for_topic(client: &mut Client, topic: &str) -> Result<i32> {
    let start = Instant::now();
    loop {
        let infos = client.metadata(Some(&[topic.to_owned()]), true).await?;
        match infos.iter().find(|t| t.name == topic) {
            Some(t) if t.error_code == 0 && !t.partitions.is_empty() => {
                return Ok(t.partitions.len() as i32)
            }
            Some(t) if t.error_code != 0 && !super::is_metadata_error(t.error_code) => {
                return Err(Error::kafka(t.error_code, None))
            }
            _ => {}
        }
        if start.elapsed() >= MAX_BLOCK {
            return Err(Error::Metadata(format!(
                "Topic {topic} not present in metadata after {} ms.",
                MAX_BLOCK.as_millis()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads `input` to the end, producing every line. Returns the number of
/// records acknowledged (or sent, with acks=0).
pub(crate) async fn produce<R: AsyncRead + Unpin + Send + 'static>(
    client: &mut Client,
    opts: &ProduceOptions,
    reader: &LineReader,
    input: R,
) -> Result<u64, String> {
    let partitions = wait_for_topic(client, &opts.topic)
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::channel::<std::io::Result<String>>(1024);
    tokio::spawn(async move {
        let mut lines = BufReader::new(input);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf).await {
                Ok(0) => return,
                Ok(_) => {
                    // Java's readLine strips "\n", "\r\n" or "\r".
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });

    let mut partitioner = Partitioner::default();
    let mut pending = Pending::default();
    let mut sent = 0u64;
    let mut line_number = 0u64;
    loop {
        let deadline = pending.since.map(|s| s + opts.linger);
        let next = match deadline {
            // None: the linger time ran out first.
            Some(d) => tokio::time::timeout_at(d.into(), rx.recv()).await.ok(),
            None => Some(rx.recv().await),
        };
        let mut flush_now = next.is_none();
        let mut done = false;
        match next {
            Some(Some(Ok(line))) => {
                line_number += 1;
                let record = reader.parse(&line, line_number)?;
                let p = partitioner.partition(record.key.as_deref(), partitions);
                let size = pending.push(p, record);
                flush_now = opts.sync || size >= opts.batch_size;
            }
            Some(Some(Err(e))) => return Err(format!("Error reading standard input: {e}")),
            Some(None) => {
                flush_now = true;
                done = true;
            }
            None => {}
        }
        if flush_now && !pending.is_empty() {
            sent += flush(client, opts, pending.take()).await?;
        }
        if done {
            return Ok(sent);
        }
    }
}

async fn flush(
    client: &mut Client,
    opts: &ProduceOptions,
    batches: BTreeMap<i32, Vec<Record>>,
) -> Result<u64, String> {
    let results = client
        .produce(&opts.topic, &batches, opts.acks, opts.compression)
        .await
        .map_err(|e| e.to_string())?;
    let mut failed = None;
    let mut ok = 0u64;
    for (p, records) in &batches {
        match results.get(p) {
            Some(Ok(_)) => ok += records.len() as u64,
            Some(Err(e)) => {
                for r in records {
                    eprintln!(
                        "Error when sending message to topic {} with key: {}, value: {} bytes with error: {e}",
                        opts.topic,
                        r.key
                            .as_ref()
                            .map_or_else(|| "null".to_owned(), |k| format!("{} bytes", k.len())),
                        r.value.as_ref().map_or(0, Bytes::len),
                    );
                }
                failed.get_or_insert_with(|| e.to_string());
            }
            None => {
                failed.get_or_insert_with(|| format!("no result for partition {p}"));
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_lines_are_values() {
        let r = LineReader::default().parse("a\tb", 1).unwrap();
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"a\tb"[..]));
    }

    #[test]
    fn key_split_at_first_separator() {
        let reader =
            LineReader::from_properties(&props(&[("parse.key", "true"), ("key.separator", ":")]));
        let r = reader.parse("k1:v:with:colons", 1).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v:with:colons"[..]));
        let r = reader.parse(":v", 1).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn missing_separator_is_an_error_unless_ignored() {
        let reader = LineReader::from_properties(&props(&[("parse.key", "true")]));
        assert_eq!(
            reader.parse("novalue", 3).unwrap_err(),
            "No key separator found on line number 3: 'novalue'"
        );
        let lenient =
            LineReader::from_properties(&props(&[("parse.key", "true"), ("ignore.error", "true")]));
        let r = lenient.parse("novalue", 3).unwrap();
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"novalue"[..]));
    }

    #[test]
    fn headers_key_and_null_marker() {
        let reader = LineReader::from_properties(&props(&[
            ("parse.headers", "true"),
            ("parse.key", "true"),
            ("null.marker", "NULL"),
        ]));
        assert_eq!(
            reader.parse("h1:a,h2\tk\tv", 4).unwrap_err(),
            "No header key separator found in pair 'h2' on line number 4"
        );
        let r = reader.parse("h1:a,h2:NULL\tNULL\tv", 1).unwrap();
        assert_eq!(
            r.headers,
            vec![
                ("h1".to_owned(), Some(Bytes::from("a"))),
                ("h2".to_owned(), None)
            ]
        );
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn partitioner_hashes_keys_and_round_robins_the_rest() {
        let mut p = Partitioner { next: 0 };
        assert_eq!(
            p.partition(Some(b"foobar"), 3),
            partition_for_key(b"foobar", 3)
        );
        let spread: Vec<i32> = (0..6).map(|_| p.partition(None, 3)).collect();
        assert_eq!(spread, vec![0, 1, 2, 0, 1, 2]);
    }
}
