//! `runnel consumer-groups`: the command-line side of `groups`, with
//! kafka-consumer-groups.sh's messages and exit codes.

use std::collections::BTreeMap;

use clap::{ArgGroup, Args};

use super::client::{Client, ClientConfig, OffsetSpec};
use super::groups;

fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("Error: {msg}");
    1
}

/// `kafka-consumer-groups.sh` options.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("action").required(true).args(["list", "describe", "reset_offsets", "delete"])))]
pub struct ConsumerGroupsArgs {
    /// The Kafka server(s) to connect to, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "SERVERS")]
    pub bootstrap_server: String,
    /// List all consumer groups.
    #[arg(long)]
    pub list: bool,
    /// Describe a group: committed offsets, log end offsets, lag, members.
    #[arg(long)]
    pub describe: bool,
    /// Reset a group's committed offsets (the group must have no active members).
    #[arg(long)]
    pub reset_offsets: bool,
    /// Delete a group.
    #[arg(long)]
    pub delete: bool,
    /// The group (repeatable with --delete).
    #[arg(long)]
    pub group: Vec<String>,
    /// For --reset-offsets: a topic, or topic:partition[,partition...] (repeatable).
    #[arg(long)]
    pub topic: Vec<String>,
    /// For --reset-offsets: every topic the group has committed offsets for.
    #[arg(long)]
    pub all_topics: bool,
    #[arg(long)]
    pub to_earliest: bool,
    #[arg(long)]
    pub to_latest: bool,
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// YYYY-MM-DDTHH:mm:SS.sss, optionally with Z or ±HH:MM.
    #[arg(long, value_name = "DATETIME")]
    pub to_datetime: Option<String>,
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// Show the new offsets without committing them (the default).
    #[arg(long)]
    pub dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    pub execute: bool,
}

pub async fn run(args: ConsumerGroupsArgs) -> i32 {
    let config = match ClientConfig::from_bootstrap(&args.bootstrap_server) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut client = match Client::connect(config).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if args.list {
        return match groups::list_groups(&mut client).await {
            Ok(list) => {
                for (g, _) in list {
                    println!("{g}");
                }
                0
            }
            Err(e) => fail(e),
        };
    }
    if args.group.is_empty() {
        return fail("--group is required with --describe, --reset-offsets and --delete");
    }
    if args.delete {
        let mut code = 0;
        for g in &args.group {
            let res = async {
                let c = groups::find_coordinator(&mut client, g).await?;
                groups::delete_group(&mut client, c, g).await
            }
            .await;
            match res {
                Ok(()) => println!("Deletion of requested consumer groups ('{g}') was successful."),
                Err(e) => {
                    println!("Deletion of some consumer groups failed:\n* Group '{g}' could not be deleted due to: {e}");
                    code = 1;
                }
            }
        }
        return code;
    }
    let group = args.group[0].clone();
    let coordinator = match groups::find_coordinator(&mut client, &group).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let described = match groups::describe_group(&mut client, coordinator, &group).await {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let committed = match groups::committed_offsets(&mut client, coordinator, &group).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if args.describe {
        let state = described.group_state.to_string();
        if state == "Dead" {
            return fail(format!("Consumer group '{group}' does not exist."));
        }
        if described.members.is_empty() {
            println!("\nConsumer group '{group}' has no active members.");
        }
        return match groups::describe_rows(&mut client, &described, &committed).await {
            Ok(rows) => {
                print!("{}", groups::format_describe(&group, &rows));
                0
            }
            Err(e) => fail(e),
        };
    }
    // --reset-offsets
    let state = described.group_state.to_string();
    if args.execute && !matches!(state.as_str(), "Empty" | "Dead") {
        return fail(format!(
            "Assignments can only be reset if the group '{group}' is inactive, but the current state is {state}."
        ));
    }
    let targets = match partitions_to_reset(&mut client, &args, &committed).await {
        Ok(t) if !t.is_empty() => t,
        Ok(_) => return fail("no partitions to reset: give --topic or --all-topics"),
        Err(e) => return fail(e),
    };
    let new = match new_offsets(&mut client, &args, &committed, &targets).await {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    if args.execute {
        if let Err(e) = groups::commit_offsets(&mut client, coordinator, &group, &new).await {
            return fail(e);
        }
    } else if !args.dry_run {
        println!("WARN: No action will be performed as the --execute option is missing. In a future major release, the default behavior of this command will be to prompt the user before executing the reset rather than doing a dry run. You should add the --dry-run option explicitly if you are scripting this command and want to keep the current default behavior without prompting.");
    }
    print!("{}", groups::format_reset(&group, &new));
    0
}

async fn partitions_to_reset(
    client: &mut Client,
    args: &ConsumerGroupsArgs,
    committed: &BTreeMap<(String, i32), i64>,
) -> super::Result<Vec<(String, i32)>> {
    let mut out = Vec::new();
    if args.all_topics {
        out.extend(committed.keys().cloned());
    }
    for spec in &args.topic {
        match spec.split_once(':') {
            Some((t, parts)) => {
                for p in parts.split(',') {
                    let p: i32 = p.trim().parse().map_err(|_| {
                        super::Error::Metadata(format!("bad partition in --topic {spec}"))
                    })?;
                    out.push((t.to_owned(), p));
                }
            }
            None => {
                let info = client.topic_info(spec, false).await?;
                out.extend(info.partitions.iter().map(|p| (spec.clone(), p.partition)));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

async fn offsets_for(
    client: &mut Client,
    targets: &[(String, i32)],
    spec: OffsetSpec,
) -> super::Result<BTreeMap<(String, i32), i64>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in targets {
        by_topic.entry(t).or_default().push(*p);
    }
    let mut out = BTreeMap::new();
    for (t, parts) in by_topic {
        for (p, r) in client.list_offsets(t, &parts, spec).await? {
            if let Some(off) = r?.offset {
                out.insert((t.to_owned(), p), off);
            }
        }
    }
    Ok(out)
}

async fn new_offsets(
    client: &mut Client,
    args: &ConsumerGroupsArgs,
    committed: &BTreeMap<(String, i32), i64>,
    targets: &[(String, i32)],
) -> super::Result<BTreeMap<(String, i32), i64>> {
    let earliest = offsets_for(client, targets, OffsetSpec::Earliest).await?;
    let latest = offsets_for(client, targets, OffsetSpec::Latest).await?;
    let by_time = match &args.to_datetime {
        Some(s) => {
            let ts = groups::parse_datetime(s).ok_or_else(|| {
                super::Error::Metadata(format!(
                    "cannot parse --to-datetime {s:?}: use YYYY-MM-DDTHH:mm:SS.sss"
                ))
            })?;
            Some(offsets_for(client, targets, OffsetSpec::Timestamp(ts)).await?)
        }
        None => None,
    };
    let mut out = BTreeMap::new();
    for k in targets {
        let (lo, hi) = (
            earliest.get(k).copied().unwrap_or(0),
            latest.get(k).copied().unwrap_or(0),
        );
        let current = committed.get(k).copied();
        let wanted = if args.to_earliest {
            lo
        } else if args.to_latest {
            hi
        } else if let Some(o) = args.to_offset {
            o
        } else if let Some(n) = args.shift_by {
            current.unwrap_or(lo).saturating_add(n)
        } else if let Some(t) = &by_time {
            // No record at or after the time: the end, as Kafka does.
            t.get(k).copied().unwrap_or(hi)
        } else {
            return Err(super::Error::Metadata(
                "give one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by"
                    .into(),
            ));
        };
        // Kafka clamps to what the log holds.
        out.insert(k.clone(), wanted.clamp(lo, hi.max(lo)));
    }
    Ok(out)
}
