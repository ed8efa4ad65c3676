//! What compliance officers (the `auditor` role) get: the tenant's audit events page by
//! page, the streamed export bundle (itself audited as `audit.export`), and signed
//! residency evidence — where the tenant's data, keys and log live.

use std::time::SystemTime;

use audit::{Action, Event, Hash};
use bytes::Bytes;
use futures::Stream;
use model::TenantId;
use store::audit::EventFilter;

use crate::ServiceError;
use crate::tenancy::{Caller, RegionService};

/// `GET .../audit/events` parameters, parsed.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub action: Option<Action>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// One page of events.
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub next_cursor: Option<String>,
}

/// Chunks buffered between the database reader and the client of an export.
const EXPORT_BUFFER: usize = 8;

/// Domain separation for evidence signatures.
pub const EVIDENCE_CONTEXT: &[u8] = b"residency-evidence-v1\n";

impl RegionService {
    pub async fn audit_events(
        &self,
        caller: &Caller,
        query: EventQuery,
    ) -> Result<EventPage, ServiceError> {
        let limit = match query.limit {
            None => 100,
            Some(limit) if (1..=1000).contains(&limit) => limit,
            Some(_) => return Err(ServiceError::invalid("limit", "must be 1 to 1000")),
        };
        let after_seq = match &query.cursor {
            None => 0,
            Some(cursor) => cursor
                .strip_prefix("s")
                .and_then(|seq| seq.parse::<u64>().ok())
                .ok_or_else(|| ServiceError::BadRequest("malformed cursor".to_owned()))?,
        };
        let filter = EventFilter {
            from: query.from,
            to: query.to,
            action: query.action.map(|action| action.as_str().to_owned()),
            after_seq,
            limit: limit + 1,
        };
        self.record_read(caller, Action::AuditRead, "audit/events")
            .await?;
        // An auditor sees every event recorded before the request, queued reads included.
        self.inner.audit.flush().await?;
        let mut events = self.inner.audit.events(&caller.tenant, &filter).await?;
        let next_cursor = if events.len() > limit as usize {
            events.truncate(limit as usize);
            events.last().map(|event| format!("s{}", event.seq))
        } else {
            None
        };
        Ok(EventPage {
            events,
            next_cursor,
        })
    }

    /// The tenant's events in `[from, to)` as NDJSON, streamed page by page, then the
    /// signed manifest line. The export's own `audit.export` event is durable before the
    /// first byte. A failure half-way ends the stream with an error, so the client gets
    /// a bundle without a manifest, which `verify` refuses.
    pub async fn audit_export(
        &self,
        caller: &Caller,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, ServiceError>
    {
        self.record_read(caller, Action::AuditExport, "audit/export")
            .await?;
        self.inner.audit.flush().await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_BUFFER);
        let service = self.clone();
        let tenant = caller.tenant;
        tokio::spawn(async move {
            if let Err(err) = service.write_export(&tenant, from, to, &sender).await {
                tracing::error!(tenant = %tenant, "failed to export the audit log: {err:#}");
                let _ = sender
                    .send(Err(std::io::Error::other("export failed")))
                    .await;
            }
        });
        Ok(futures::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
        ))
    }

    async fn write_export(
        &self,
        tenant: &TenantId,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        sender: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<(), ServiceError> {
        self.inner
            .audit
            .export_pages(tenant, from, to, |chunk| async move {
                // `false` (the client went away) ends the export early.
                sender.send(Ok(Bytes::from(chunk))).await.is_ok()
            })
            .await?;
        Ok(())
    }

    /// Signed evidence of where the tenant's data lives.
    pub async fn residency_evidence(
        &self,
        caller: &Caller,
    ) -> Result<wire::api::ResidencyEvidence, ServiceError> {
        let tenant = self
            .local_tenant(&caller.tenant)
            .await?
            .ok_or(ServiceError::NotFound { what: "tenant" })?;
        let id = caller.tenant;
        let (records, files, head) = self
            .read_primary_first(&id, |client| {
                Box::pin(async move {
                    let records = store::records::count(client, &id).await?;
                    let files = store::files::count(client, &id).await?;
                    let head = store::audit::head(client, &id).await?;
                    Ok((records, files, head))
                })
            })
            .await?;
        let versions = self.inner.keyring.versions(&id).await?;
        let database = &self.inner.database;
        let signing_key = self.inner.audit.signing_key();
        let mut evidence = wire::api::ResidencyEvidence {
            tenant: id.to_string(),
            home_region: tenant.policy.home().to_string(),
            allowed_regions: crate::tenancy::region_names(tenant.policy.allowed()),
            database: wire::api::EvidenceDatabase {
                primary: database.primary().address(),
                replicas: database
                    .replicas()
                    .iter()
                    .map(|replica| replica.address())
                    .collect(),
            },
            bucket: self.inner.objects.location(),
            kms_key: self.inner.keyring.kms().key_id(),
            key_versions: versions
                .iter()
                .map(|key| wire::api::KeyVersionView {
                    version: key.version.get(),
                    created_at: audit::time::format(key.created_at),
                    state: key.state.as_str().to_owned(),
                })
                .collect(),
            records: u64::try_from(records).unwrap_or_default(),
            files: u64::try_from(files).unwrap_or_default(),
            audit_head: wire::api::AuditHeadView {
                seq: head.map_or(0, |(seq, _)| seq),
                hash: head.map_or_else(String::new, |(_, hash)| Hash::from_bytes(hash).to_string()),
            },
            generated_at: audit::time::format(SystemTime::now()),
            key_id: signing_key.key_id().to_owned(),
            signature: String::new(),
        };
        let payload = evidence_payload(&evidence)?;
        evidence.signature = signing_key.sign(&payload).to_base64();
        self.record_read(caller, Action::AuditRead, "residency")
            .await?;
        Ok(evidence)
    }
}

/// What an evidence signature covers: [`EVIDENCE_CONTEXT`], then the evidence's JSON with
/// an empty `signature` (fields in their documented order).
pub fn evidence_payload(evidence: &wire::api::ResidencyEvidence) -> Result<Vec<u8>, ServiceError> {
    let mut unsigned = evidence.clone();
    unsigned.signature = String::new();
    let mut payload = EVIDENCE_CONTEXT.to_vec();
    serde_json::to_writer(&mut payload, &unsigned)
        .map_err(|err| ServiceError::internal_while("encode evidence", err))?;
    Ok(payload)
}
