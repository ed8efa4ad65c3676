//! `residency-bench audit`, read events: how many events per second the batched audit
//! queue's writer makes durable (it bounds the read throughput of a node: a full queue
//! fails reads with 503), against a prototype of a multi-row append.
//!
//! Today the writer appends a batch in one transaction but one statement per event
//! (`service::audit::Core::append_batch` → `store::audit::append`). The prototype keeps
//! the same chain rules — each tenant's events link after its head, the head moves only
//! if it is still the events' predecessor, all in the batch's transaction — but writes
//! each tenant's events of a batch with one statement (`unnest` of arrays), and sends the
//! statements of all tenants of the batch together (pipelined on the one connection).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use audit::{Event, Head, NewEvent};
use model::{RegionId, TenantId};
use service::{AuditKeys, AuditLog, AuditSettings, ReadAudit};
use store::RegionDatabase;
use tokio_postgres::types::ToSql;

/// Events per transaction, as the queue's writer takes them.
const BATCH: usize = 256;

/// What was measured: events made durable per second, today and by the prototype.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRates {
    pub queue_per_sec: f64,
    pub prototype_per_sec: f64,
}

/// Writes `events` read events spread over `tenants` tenants, once through a batched
/// `AuditLog` (from the first `record` until `flush` returns) and once through the
/// prototype, interleaved `rounds` times; the medians.
pub(crate) async fn measure(
    database: &RegionDatabase,
    region: &RegionId,
    events: usize,
    tenants: usize,
    rounds: usize,
) -> anyhow::Result<EventRates> {
    let (mut queue, mut prototype) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let ids: Vec<TenantId> = (0..tenants.max(1))
            .map(|_| TenantId::from_random_bytes(rand::random()))
            .collect();
        queue.push(through_queue(database, region, &ids, events).await?);
        let ids: Vec<TenantId> = (0..tenants.max(1))
            .map(|_| TenantId::from_random_bytes(rand::random()))
            .collect();
        prototype.push(through_prototype(database, region, &ids, events).await?);
    }
    Ok(EventRates {
        queue_per_sec: crate::median(queue),
        prototype_per_sec: crate::median(prototype),
    })
}

fn read_event(region: &RegionId, tenant: TenantId, n: usize) -> NewEvent {
    NewEvent {
        time: SystemTime::now(),
        region: region.clone(),
        tenant,
        actor: audit::Actor {
            kind: audit::ActorKind::ApiKey,
            id: "key_bench".into(),
        },
        action: audit::Action::RecordRead,
        resource: format!("collections/people/records/{n:032x}"),
        outcome: audit::Outcome::Success,
        request_id: "bench".into(),
        via_region: region.clone(),
    }
}

async fn through_queue(
    database: &RegionDatabase,
    region: &RegionId,
    tenants: &[TenantId],
    events: usize,
) -> anyhow::Result<f64> {
    let log = AuditLog::with_settings(
        database.clone(),
        AuditKeys::generate(region.clone()),
        AuditSettings {
            // Room for every event: this measures the writer, not the refusal.
            reads: ReadAudit::batched(events.max(1)),
            ..AuditSettings::default()
        },
        std::sync::Arc::new(telemetry::NodeMetrics::new(region.as_str())),
    );
    let started = Instant::now();
    for n in 0..events {
        log.record(read_event(region, tenants[n % tenants.len()], n))
            .await?;
    }
    log.flush().await?;
    let rate = events as f64 / started.elapsed().as_secs_f64();
    log.shutdown(Duration::from_secs(10)).await?;
    Ok(rate)
}

/// The prototype's statement: moves the tenant's head from the events' predecessor to
/// the last event and inserts every event, or (head moved) does nothing.
const APPEND_MANY: &str = "with moved as (
         update audit_heads set seq = $2::bigint, hash = $3
         where tenant_id = $1 and seq = $4::bigint
           and (hash = $5 or ($4::bigint = 0 and hash is null))
         returning tenant_id
     )
     insert into audit_events (tenant_id, seq, time, region, actor_kind, actor_id, action, resource,
                               outcome, request_id, via_region, prev_hash, hash)
     select moved.tenant_id, e.seq, e.time, e.region, e.actor_kind, e.actor_id, e.action, e.resource,
            e.outcome, e.request_id, e.via_region, e.prev_hash, e.hash
     from moved, unnest($6::bigint[], $7::timestamptz[], $8::text[], $9::text[], $10::text[],
                        $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                        $16::bytea[], $17::bytea[])
          as e (seq, time, region, actor_kind, actor_id, action, resource, outcome, request_id,
                via_region, prev_hash, hash)";

/// One tenant's linked events of a batch, as column arrays.
struct Columns {
    tenant: String,
    last_seq: i64,
    last_hash: Vec<u8>,
    prev_seq: i64,
    prev_hash: Option<Vec<u8>>,
    seq: Vec<i64>,
    time: Vec<SystemTime>,
    region: Vec<String>,
    actor_kind: Vec<&'static str>,
    actor_id: Vec<String>,
    action: Vec<&'static str>,
    resource: Vec<String>,
    outcome: Vec<&'static str>,
    request_id: Vec<String>,
    via_region: Vec<String>,
    prev_hashes: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

impl Columns {
    fn new(tenant: TenantId, head: Option<Head>, events: &[Event]) -> Self {
        let last = events.last().expect("a tenant's group holds an event");
        Self {
            tenant: tenant.as_str().to_owned(),
            last_seq: i64::try_from(last.seq).expect("seq fits"),
            last_hash: last.hash.as_bytes().to_vec(),
            prev_seq: head.map_or(0, |h| i64::try_from(h.seq).expect("seq fits")),
            prev_hash: head.map(|h| h.hash.as_bytes().to_vec()),
            seq: events
                .iter()
                .map(|e| i64::try_from(e.seq).expect("seq fits"))
                .collect(),
            time: events.iter().map(|e| e.time).collect(),
            region: events.iter().map(|e| e.region.to_string()).collect(),
            actor_kind: events.iter().map(|e| e.actor.kind.as_str()).collect(),
            actor_id: events.iter().map(|e| e.actor.id.clone()).collect(),
            action: events.iter().map(|e| e.action.as_str()).collect(),
            resource: events.iter().map(|e| e.resource.clone()).collect(),
            outcome: events.iter().map(|e| e.outcome.as_str()).collect(),
            request_id: events.iter().map(|e| e.request_id.clone()).collect(),
            via_region: events.iter().map(|e| e.via_region.to_string()).collect(),
            prev_hashes: events
                .iter()
                .map(|e| e.prev_hash.as_bytes().to_vec())
                .collect(),
            hashes: events.iter().map(|e| e.hash.as_bytes().to_vec()).collect(),
        }
    }
}

async fn through_prototype(
    database: &RegionDatabase,
    region: &RegionId,
    tenants: &[TenantId],
    events: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut heads: HashMap<TenantId, Option<Head>> = HashMap::new();
    let all: Vec<NewEvent> = (0..events)
        .map(|n| read_event(region, tenants[n % tenants.len()], n))
        .collect();
    for batch in all.chunks(BATCH) {
        // Tenants in sorted order, each tenant's events in their order (as the writer).
        let mut groups: Vec<(TenantId, Vec<NewEvent>)> = Vec::new();
        for event in batch {
            match groups
                .iter_mut()
                .find(|(tenant, _)| *tenant == event.tenant)
            {
                Some((_, group)) => group.push(event.clone()),
                None => groups.push((event.tenant, vec![event.clone()])),
            }
        }
        groups.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut primary = database.primary().get().await?;
        let tx = primary.begin().await?;
        for (tenant, _) in &groups {
            if !heads.contains_key(tenant) {
                let head = store::audit::lock_head(&tx, tenant)
                    .await?
                    .map(|(seq, hash)| Head {
                        seq,
                        hash: audit::Hash::from_bytes(hash),
                    });
                heads.insert(*tenant, head);
            }
        }
        let mut linked = Vec::new();
        for (tenant, group) in groups {
            let before = heads[&tenant];
            let mut head = before;
            let events: Vec<Event> = group
                .into_iter()
                .map(|new| {
                    let event = audit::next(head, new);
                    head = Some(event.head());
                    event
                })
                .collect();
            linked.push((tenant, head, Columns::new(tenant, before, &events)));
        }
        let statement = tx.prepare_cached(APPEND_MANY).await?;
        let params: Vec<[&(dyn ToSql + Sync); 17]> = linked
            .iter()
            .map(|(_, _, c)| {
                [
                    &c.tenant as &(dyn ToSql + Sync),
                    &c.last_seq,
                    &c.last_hash,
                    &c.prev_seq,
                    &c.prev_hash,
                    &c.seq,
                    &c.time,
                    &c.region,
                    &c.actor_kind,
                    &c.actor_id,
                    &c.action,
                    &c.resource,
                    &c.outcome,
                    &c.request_id,
                    &c.via_region,
                    &c.prev_hashes,
                    &c.hashes,
                ]
            })
            .collect();
        let appends = params
            .iter()
            .map(|params| tx.client().execute(&statement, params));
        let written = futures::future::join_all(appends).await;
        for ((_, _, columns), result) in linked.iter().zip(written) {
            let count = result.context("append a tenant's events")?;
            if count != columns.seq.len() as u64 {
                bail!("a head moved under the prototype's batch");
            }
        }
        tx.commit().await?;
        for (tenant, head, _) in linked {
            heads.insert(tenant, head);
        }
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_link_from_the_head_before_the_batch() {
        let region = RegionId::parse("eu-central-1").expect("region");
        let tenant = TenantId::from_random_bytes([9; 16]);
        let first = audit::next(None, read_event(&region, tenant, 0));
        let second = audit::next(Some(first.head()), read_event(&region, tenant, 1));
        let columns = Columns::new(tenant, Some(first.head()), std::slice::from_ref(&second));
        assert_eq!((columns.prev_seq, columns.last_seq), (1, 2));
        assert_eq!(
            columns.prev_hash.as_deref(),
            Some(first.hash.as_bytes().as_slice())
        );
        assert_eq!(columns.prev_hashes[0], first.hash.as_bytes().to_vec());
        let empty = Columns::new(tenant, None, std::slice::from_ref(&first));
        assert_eq!((empty.prev_seq, empty.prev_hash), (0, None));
    }
}
