//! `residency-bench subjects`: a data subject's export and erasure among a million records,
//! against reading the same rows by id directly, on a local region (PostgreSQL primary and
//! replica) and a regional node the command starts itself.
//!
//! One tenant gets `--collections` collections of API.md's `people` schema (subject field
//! `email`). Through the API, one template record per collection; then `--records`
//! background records are bulk-loaded by SQL as the API would have left them: each row a
//! copy of its collection's template (the same sealed bytes and public part), its two
//! index tokens (the `email` blind index and the `subject:` token, of one of
//! `--background-subjects` subjects) and its `record.create` event appended to the
//! tenant's audit chain. Nothing of them is opened: they are the haystack.
//!
//! 1. **Export.** One subject gets `--subject-records` records spread over the collections
//!    and `--files` files, through the API; `GET .../subjects/{subject}/export` is timed
//!    `--rounds` times. Baseline: the same rows read by id directly (one `= any($ids)`
//!    query per collection, pipelined on one primary connection).
//! 2. **Erase.** `--erase-rounds` fresh subjects of the same size, each loaded through the
//!    API (untimed), then `POST .../subjects/{subject}/erase` timed. Baselines per round,
//!    before the erase: the same rows read by id, and a bare `DELETE` of them by id in a
//!    transaction that is rolled back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use devstack::LocalRegion;
use futures::StreamExt as _;
use futures::future::try_join_all;
use model::RegionId;
use serde_json::{Value, json};
use store::RegionDatabase;

use crate::key_lifecycle::{Api, Tenant};
use crate::local_node::BenchNode;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SubjectsArgs {
    /// Where to write the JSON results.
    #[arg(
        long = "json",
        value_name = "PATH",
        default_value = ".residency/bench/subjects.json"
    )]
    json: PathBuf,
    /// Background records of the tenant, over all collections (bulk-loaded by SQL).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    records: u64,
    /// Collections of the tenant, each of the `people` schema.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=50))]
    collections: u64,
    /// Subjects the background records belong to.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    background_subjects: u64,
    /// Records of each measured subject, spread over the collections (an export page holds
    /// at most 100).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100))]
    subject_records: u64,
    /// Files of each measured subject, on its first records.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=100))]
    files: u64,
    /// Size of each file, KiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_240))]
    file_kib: u64,
    /// Timed exports.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    rounds: u64,
    /// Timed erasures (each of a subject loaded for it).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    erase_rounds: u64,
    /// Concurrent API writers that load a subject's records.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    loaders: u64,
    #[command(flatten)]
    node: crate::local_node::NodeFlags,
}

/// Goals from issue 29 (medians).
const EXPORT_GOAL: Duration = Duration::from_millis(100);
const ERASE_GOAL: Duration = Duration::from_millis(250);

const REGION: &str = "eu-central-1";
/// Background rows one bulk-load statement writes.
const LOAD_CHUNK: u64 = 25_000;
/// Exports run before the timed ones (connections, statement caches, keys).
const WARM_UP: u64 = 3;

pub(crate) async fn run(args: SubjectsArgs) -> anyhow::Result<()> {
    let report = crate::on_local_region("subjects", &args.json, async |databases| {
        with_nodes(&args, databases).await
    })
    .await?;
    if args.node.check && !crate::every_goal_met(&report) {
        bail!("a benchmark goal was missed or operations failed");
    }
    Ok(())
}

async fn with_nodes(args: &SubjectsArgs, databases: &LocalRegion) -> anyhow::Result<Value> {
    let region = RegionId::parse(REGION)?;
    let node = crate::local_node::start_with(
        &region,
        databases,
        args.node.api.settings()?,
        &args.node.audit,
        crate::local_node::loopback_listener().await?,
        None,
    )
    .await?;
    let measured = measure(args, &node).await;
    node.stop_after(measured).await
}

/// The collections of the tenant: `people`, then `people_2`, `people_3`, ….
fn collection_names(count: u64) -> Vec<String> {
    (1..=count)
        .map(|n| {
            if n == 1 {
                "people".to_owned()
            } else {
                format!("people_{n}")
            }
        })
        .collect()
}

/// A `people` record body about `email`.
fn person_about(email: &str, n: u64) -> String {
    json!({"data": {
        "email": email, "name": "Ada Lovelace", "age": 30 + n % 40, "zip": "10115",
        "diagnosis": "flu", "plan": "pro"
    }})
    .to_string()
}

/// What the measurement needs at hand.
struct Bench<'a> {
    args: &'a SubjectsArgs,
    api: Api,
    tenant: Tenant,
    collections: Vec<String>,
    database: RegionDatabase,
}

/// A measured subject: its value and its records as (collection, id).
struct Subject {
    email: String,
    records: Vec<(String, String)>,
}

async fn measure(args: &SubjectsArgs, node: &BenchNode) -> anyhow::Result<Value> {
    let loaders = usize::try_from(args.loaders).unwrap_or(usize::MAX);
    let api = Api::new(node, loaders)?;
    let database = RegionDatabase::new(node.node.region.clone(), &node.database)
        .context("build the baseline's pools")?;
    let tenant = api.tenant("Bench subjects", args.loaders).await?;
    let collections = collection_names(args.collections);
    for name in &collections[1..] {
        api.ok(
            reqwest::Method::PUT,
            &format!("/v1/tenants/{}/collections/{name}", tenant.id),
            &tenant.admin,
            Some(wire::examples::collection_schema()),
        )
        .await
        .context("put a collection")?;
    }
    let bench = Bench {
        args,
        api,
        tenant,
        collections,
        database,
    };

    let loading = Instant::now();
    bench.load_background().await?;
    let load_seconds = loading.elapsed().as_secs_f64();
    eprintln!(
        "loaded {} background records in {load_seconds:.1} s",
        args.records
    );

    let subject = bench.load_subject("subject-export@example.com").await?;
    let export = bench.measure_exports(&subject).await?;
    eprintln!(
        "export: p50 {:.1} ms",
        millis(crate::percentile(&export.ours, 0.5))
    );
    let erase = bench.measure_erasures().await?;
    Ok(report(args, load_seconds, &export, &erase))
}

/// Latencies of one case and of its baselines, sorted.
#[derive(Debug, Default)]
struct Timings {
    ours: Vec<Duration>,
    by_id: Vec<Duration>,
    /// The rolled-back bare delete (erase only).
    bare_delete: Vec<Duration>,
}

impl Timings {
    fn sort(&mut self) {
        self.ours.sort();
        self.by_id.sort();
        self.bare_delete.sort();
    }
}

impl Bench<'_> {
    /// One template record per collection through the API, then the background rows by
    /// SQL, `LOAD_CHUNK` at a time; `VACUUM ANALYZE` after.
    async fn load_background(&self) -> anyhow::Result<()> {
        for (n, collection) in self.collections.iter().enumerate() {
            self.api
                .create_in(
                    &self.tenant,
                    0,
                    collection,
                    person_about(&format!("template-{n}@example.com"), 0),
                )
                .await
                .context("create a template record")?;
        }
        let per_collection = self.args.records / self.args.collections;
        let extra = self.args.records % self.args.collections;
        let mut primary = self.database.primary().get().await?;
        for (n, collection) in self.collections.iter().enumerate() {
            let mut left = per_collection + u64::from((n as u64) < extra);
            while left > 0 {
                let chunk = left.min(LOAD_CHUNK);
                let tx = primary.begin().await?;
                tx.client()
                    .batch_execute("set local statement_timeout = 0")
                    .await?;
                tx.client()
                    .execute(
                        BULK_LOAD,
                        &[
                            &self.tenant.id.as_str(),
                            &collection.as_str(),
                            &i64::try_from(chunk)?,
                            &i64::try_from(self.args.background_subjects)?,
                            &REGION,
                        ],
                    )
                    .await
                    .context("bulk-load background records")?;
                tx.commit().await?;
                left -= chunk;
            }
        }
        for table in ["records", "record_index", "audit_events"] {
            primary
                .client()
                .batch_execute(&format!("vacuum analyze {table}"))
                .await
                .with_context(|| format!("vacuum the {table} table"))?;
        }
        Ok(())
    }

    /// `--subject-records` records about `email` over the collections and `--files`
    /// files on the first, through the API.
    async fn load_subject(&self, email: &str) -> anyhow::Result<Subject> {
        let writers = self.tenant.writers.len().max(1);
        let creates = (0..self.args.subject_records).map(|n| {
            let collection =
                self.collections[usize::try_from(n % self.args.collections).unwrap_or(0)].clone();
            let body = person_about(email, n);
            async move {
                let id = self
                    .api
                    .create_in(
                        &self.tenant,
                        usize::try_from(n).unwrap_or(0) % writers,
                        &collection,
                        body,
                    )
                    .await?;
                anyhow::Ok((collection, id))
            }
        });
        let records: Vec<(String, String)> = futures::stream::iter(creates)
            .buffered(writers)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let bytes = usize::try_from(self.args.file_kib * 1024).unwrap_or(usize::MAX);
        let files = usize::try_from(self.args.files).unwrap_or(usize::MAX);
        try_join_all(records.iter().take(files).map(|(collection, id)| {
            let body: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
            let url = format!(
                "{}/v1/tenants/{}/collections/{collection}/records/{id}/files/document.bin",
                self.api.base, self.tenant.id
            );
            let request = self
                .api
                .http
                .put(url)
                .bearer_auth(&self.tenant.admin)
                .body(body);
            async move {
                let response = request.send().await?;
                let status = response.status();
                if status != reqwest::StatusCode::CREATED {
                    bail!("put a file: {status}: {}", response.text().await?);
                }
                anyhow::Ok(())
            }
        }))
        .await?;
        Ok(Subject {
            email: email.to_owned(),
            records,
        })
    }

    fn subject_path(&self, subject: &Subject, action: &str) -> String {
        format!(
            "/v1/tenants/{}/subjects/{}/{action}",
            self.tenant.id, subject.email
        )
    }

    async fn measure_exports(&self, subject: &Subject) -> anyhow::Result<Timings> {
        let path = self.subject_path(subject, "export");
        let mut timings = Timings::default();
        for round in 0..WARM_UP + self.args.rounds {
            let started = Instant::now();
            let export = self
                .api
                .ok(reqwest::Method::GET, &path, &self.tenant.admin, None)
                .await
                .context("export the subject")?;
            let took = started.elapsed();
            let records = export["records"].as_array().map_or(0, Vec::len);
            ensure!(
                records == subject.records.len(),
                "the export holds {records} records, not the subject's {}",
                subject.records.len()
            );
            let by_id = self.read_by_id(subject).await?;
            if round >= WARM_UP {
                timings.ours.push(took);
                timings.by_id.push(by_id);
            }
        }
        timings.sort();
        Ok(timings)
    }

    async fn measure_erasures(&self) -> anyhow::Result<Timings> {
        let mut timings = Timings::default();
        for round in 0..self.args.erase_rounds {
            let subject = self
                .load_subject(&format!("subject-erase-{round}@example.com"))
                .await?;
            timings.by_id.push(self.read_by_id(&subject).await?);
            timings.bare_delete.push(self.bare_delete(&subject).await?);
            let started = Instant::now();
            let erased = self
                .api
                .ok(
                    reqwest::Method::POST,
                    &self.subject_path(&subject, "erase"),
                    &self.tenant.admin,
                    None,
                )
                .await
                .context("erase the subject")?;
            timings.ours.push(started.elapsed());
            ensure!(
                erased["records_erased"].as_u64() == Some(subject.records.len() as u64)
                    && erased["files_erased"].as_u64() == Some(self.args.files),
                "the erasure answered {erased}, not the subject's {} records and {} files",
                subject.records.len(),
                self.args.files
            );
        }
        timings.sort();
        Ok(timings)
    }

    /// The subject's rows grouped by collection: (collection, ids).
    fn by_collection(subject: &Subject) -> Vec<(&str, Vec<&str>)> {
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for (collection, id) in &subject.records {
            match groups.iter_mut().find(|(name, _)| name == collection) {
                Some((_, ids)) => ids.push(id),
                None => groups.push((collection, vec![id])),
            }
        }
        groups
    }

    /// Reads the subject's rows by id on a primary connection: one query per collection,
    /// pipelined; how long it took.
    async fn read_by_id(&self, subject: &Subject) -> anyhow::Result<Duration> {
        let primary = self.database.primary().get().await?;
        let client = primary.client();
        let statement = client.prepare(READ_BY_ID).await?;
        let groups = Self::by_collection(subject);
        let started = Instant::now();
        let (tenant, statement) = (self.tenant.id.as_str(), &statement);
        let rows = try_join_all(groups.iter().map(|(collection, ids)| async move {
            client.query(statement, &[&tenant, collection, ids]).await
        }))
        .await?;
        let took = started.elapsed();
        let read: usize = rows.iter().map(Vec::len).sum();
        ensure!(
            read == subject.records.len(),
            "read {read} of the subject's {} rows by id",
            subject.records.len()
        );
        Ok(took)
    }

    /// Deletes the subject's rows by id in a transaction and rolls it back; how long the
    /// delete took.
    async fn bare_delete(&self, subject: &Subject) -> anyhow::Result<Duration> {
        let mut primary = self.database.primary().get().await?;
        let tx = primary.begin().await?;
        let statement = tx.client().prepare(DELETE_BY_ID).await?;
        let groups = Self::by_collection(subject);
        let started = Instant::now();
        let (tenant, statement, in_tx) = (self.tenant.id.as_str(), &statement, &tx);
        let deleted = try_join_all(groups.iter().map(|(collection, ids)| async move {
            in_tx
                .client()
                .execute(statement, &[&tenant, collection, ids])
                .await
        }))
        .await?;
        let took = started.elapsed();
        drop(tx);
        ensure!(
            deleted.iter().sum::<u64>() == subject.records.len() as u64,
            "the bare delete found {} of the subject's {} rows",
            deleted.iter().sum::<u64>(),
            subject.records.len()
        );
        Ok(took)
    }
}

/// One chunk of background records of collection `$2` of tenant `$1`: `$3` copies of the
/// collection's first record, their `email` and `subject:` tokens (of subject
/// `hash(id) % $4`) and their `record.create` events after the tenant's chain head
/// (locked, then moved to the last), region `$5`. The events' hashes are stand-ins: the
/// chain of a benchmark tenant is not verified.
const BULK_LOAD: &str = "
with head as (
    select seq from audit_heads where tenant_id = $1 for update
), template as (
    select public, sealed from records where tenant_id = $1 and collection = $2
     order by created_at limit 1
), inserted as (
    insert into records (tenant_id, collection, record_id, public, sealed)
    select $1, $2, gen_random_uuid()::text, t.public, t.sealed
      from template t, generate_series(1, $3::bigint)
    returning record_id
), indexed as (
    insert into record_index (tenant_id, collection, field, token, record_id)
    select $1, $2, f.field,
           sha256(convert_to(f.field || 'bench-subject-' || (abs(hashtext(i.record_id)::bigint) % $4::bigint), 'UTF8')),
           i.record_id
      from inserted i, (values ('email'), ('subject:')) f(field)
), events as (
    insert into audit_events (tenant_id, seq, time, region, actor_kind, actor_id, action,
                              resource, outcome, request_id, via_region, prev_hash, hash)
    select $1, h.seq + row_number() over (order by i.record_id), now(), $5, 'api_key',
           'bench-loader', 'record.create', 'collections/' || $2 || '/records/' || i.record_id,
           'success', 'bench-load', $5, sha256(convert_to('prev' || i.record_id, 'UTF8')),
           sha256(convert_to(i.record_id, 'UTF8'))
      from inserted i, head h
    returning seq, hash
)
update audit_heads
   set (seq, hash) = (select seq, hash from events order by seq desc limit 1)
 where tenant_id = $1";

const READ_BY_ID: &str = "select record_id, version, public, sealed, created_at, updated_at
    from records where tenant_id = $1 and collection = $2 and record_id = any($3)";

const DELETE_BY_ID: &str =
    "delete from records where tenant_id = $1 and collection = $2 and record_id = any($3)";

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn case_json(case: &str, t: &Timings, goal: Duration) -> Value {
    let p50 = crate::percentile(&t.ours, 0.50);
    let base = crate::percentile(&t.by_id, 0.50);
    let mut value = json!({
        "case": case,
        "rounds": t.ours.len(),
        "p50_ms": millis(p50),
        "p99_ms": millis(crate::percentile(&t.ours, 0.99)),
        "by_id_p50_ms": millis(base),
        "by_id_p99_ms": millis(crate::percentile(&t.by_id, 0.99)),
        "ratio_to_by_id": p50.as_secs_f64() / base.as_secs_f64().max(1e-9),
        "goal_p50_ms": millis(goal),
        "met": !t.ours.is_empty() && p50 <= goal,
    });
    if !t.bare_delete.is_empty() {
        value["bare_delete_p50_ms"] = json!(millis(crate::percentile(&t.bare_delete, 0.50)));
        value["bare_delete_p99_ms"] = json!(millis(crate::percentile(&t.bare_delete, 0.99)));
    }
    value
}

fn report(args: &SubjectsArgs, load_seconds: f64, export: &Timings, erase: &Timings) -> Value {
    println!(
        "{} background records in {} collections ({} subjects), loaded in {load_seconds:.0} s; each measured subject: {} records, {} files of {} KiB",
        args.records,
        args.collections,
        args.background_subjects,
        args.subject_records,
        args.files,
        args.file_kib
    );
    println!(
        "{:<8} {:>7} {:>9} {:>9} {:>13} {:>13} {:>9}",
        "case", "rounds", "p50 ms", "p99 ms", "by id p50 ms", "by id p99 ms", "goal"
    );
    for (case, t, goal) in [
        ("export", export, EXPORT_GOAL),
        ("erase", erase, ERASE_GOAL),
    ] {
        println!(
            "{case:<8} {:>7} {:>9.1} {:>9.1} {:>13.2} {:>13.2} {:>9}",
            t.ours.len(),
            millis(crate::percentile(&t.ours, 0.50)),
            millis(crate::percentile(&t.ours, 0.99)),
            millis(crate::percentile(&t.by_id, 0.50)),
            millis(crate::percentile(&t.by_id, 0.99)),
            format!("≤{} ms", goal.as_millis()),
        );
    }
    println!(
        "  bare DELETE of the same rows by id (rolled back): p50 {:.2} ms, p99 {:.2} ms",
        millis(crate::percentile(&erase.bare_delete, 0.50)),
        millis(crate::percentile(&erase.bare_delete, 0.99)),
    );
    json!({
        "benchmark": "subjects",
        "optimized_build": !cfg!(debug_assertions),
        "records": args.records,
        "collections": args.collections,
        "background_subjects": args.background_subjects,
        "subject_records": args.subject_records,
        "files": args.files,
        "file_kib": args.file_kib,
        "load_seconds": load_seconds,
        "results": [
            case_json("export", export, EXPORT_GOAL),
            case_json("erase", erase, ERASE_GOAL),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<SubjectsArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: SubjectsArgs,
        }
        <Wrapper as clap::Parser>::try_parse_from(argv).map(|w| w.args)
    }

    #[test]
    fn the_defaults_are_the_issues_sizes() {
        let args = parse(&["subjects"]).expect("the defaults parse");
        assert_eq!(args.records, 1_000_000);
        assert_eq!(args.collections, 5);
        assert_eq!(args.subject_records, 100);
        assert!(parse(&["subjects", "--subject-records", "101"]).is_err());
        assert!(parse(&["subjects", "--collections", "0"]).is_err());
    }

    #[test]
    fn collections_are_named_apart_and_records_follow_the_schema() {
        assert_eq!(collection_names(3), ["people", "people_2", "people_3"]);
        let body: Value = serde_json::from_str(&person_about("a@example.com", 7)).expect("json");
        assert_eq!(body["data"]["email"], "a@example.com");
        assert_eq!(body["data"]["age"], 37);
    }

    #[test]
    fn a_subjects_rows_are_grouped_by_collection() {
        let subject = Subject {
            email: "a@example.com".into(),
            records: vec![
                ("people".into(), "1".into()),
                ("people_2".into(), "2".into()),
                ("people".into(), "3".into()),
            ],
        };
        let groups = Bench::by_collection(&subject);
        assert_eq!(
            groups,
            vec![("people", vec!["1", "3"]), ("people_2", vec!["2"])]
        );
    }
}
