//! Records (`records`) and their search tokens (`record_index`). A record arrives split by
//! the service: `public` fields as a JSON object, everything else sealed in one opaque
//! blob; searchable sealed fields add HMAC tokens. The statement that writes a record also
//! derives a token for each public field (the SHA-256 of its canonical JSON text, field
//! `public:<name>`), so exact-match search on either kind is an equality lookup on one
//! index, which row-level security still lets PostgreSQL use (no jsonb operator is
//! leakproof, so a GIN index on `public` would not be). Tokens are written, replaced and
//! deleted with their record, in the same statement.

use std::time::SystemTime;

use model::{Lsn, TenantId};
use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::audit::{AuditRow, EventValues};
use crate::statement::{ComposedOnce, Placeholder, Statement};
use crate::{Primary, PrimaryTx, StoreError};

/// One blind-index token of a record. `field` is a schema field name; names starting
/// with [`PUBLIC_TOKEN_PREFIX`] are reserved ([`StoreError::Check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub field: String,
    pub token: [u8; 32],
}

/// One record. Debug leaves out the sealed bytes.
#[derive(Clone, PartialEq)]
pub struct RecordRow {
    pub id: String,
    pub version: i64,
    pub public: serde_json::Value,
    pub sealed: Vec<u8>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl std::fmt::Debug for RecordRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordRow")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("sealed_len", &self.sealed.len())
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

/// What a conditional change did.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Updated (the new row) or deleted (the row as it was).
    Done(RecordRow),
    NotFound,
    /// `expected_version` was given and the record is at `current`.
    VersionMismatch {
        current: i64,
    },
}

const COLUMNS: &str = "record_id, version, public, sealed, created_at, updated_at";

/// The `record_index.field` prefix of the tokens derived from public fields.
pub const PUBLIC_TOKEN_PREFIX: &str = "public:";

/// The search tokens of a record: the sealed fields' tokens (`$fields`, `$tokens`) and one
/// per top-level field of `public` (`$public`), as `(field, token)` rows. `public` must be
/// an object (the table's check constraint says so; a non-object yields no tokens here so
/// that the constraint, not `jsonb_each`, reports it).
fn wanted_tokens(fields: &str, tokens: &str, public: &str) -> String {
    format!(
        "select u.field, u.token from unnest({fields}::text[], {tokens}::bytea[]) as u (field, token)
         union
         select '{PUBLIC_TOKEN_PREFIX}' || p.key, {token}
         from jsonb_each(case jsonb_typeof({public}::jsonb) when 'object' then {public}::jsonb
                         else '{{}}'::jsonb end) as p",
        token = public_token("p.value"),
    )
}

/// The token of a public value: the same SQL on the write and the search side, so both
/// see jsonb's canonical text.
fn public_token(value: &str) -> String {
    format!("sha256(convert_to(({value})::text, 'UTF8'))")
}

fn check_index(index: &[IndexEntry]) -> Result<(), StoreError> {
    if index
        .iter()
        .any(|entry| entry.field.starts_with(PUBLIC_TOKEN_PREFIX))
    {
        return Err(StoreError::Check {
            constraint: "record_index_reserved_field".into(),
        });
    }
    Ok(())
}

pub(crate) fn decode(row: &Row) -> Result<RecordRow, StoreError> {
    Ok(RecordRow {
        id: row.try_get(0)?,
        version: row.try_get(1)?,
        public: row.try_get(2)?,
        sealed: row.try_get(3)?,
        created_at: row.try_get(4)?,
        updated_at: row.try_get(5)?,
    })
}

/// The index entries as two parallel arrays, for `unnest($a::text[], $b::bytea[])`.
fn index_arrays(index: &[IndexEntry]) -> (Vec<&str>, Vec<&[u8]>) {
    index
        .iter()
        .map(|entry| (entry.field.as_str(), entry.token.as_slice()))
        .unzip()
}

/// Inserts a record (version 1) and its index tokens in one statement.
/// [`StoreError::Conflict`] when the id exists, [`StoreError::ForeignKey`] when the
/// collection does not.
pub async fn insert(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    collection: &str,
    id: &str,
    public: &serde_json::Value,
    sealed: &[u8],
    index: &[IndexEntry],
) -> Result<RecordRow, StoreError> {
    let record = NewRecord {
        tenant,
        collection,
        id,
        public,
        sealed,
        index,
    };
    let (row, _) = insert_statement(tx, record, None).await?;
    Ok(row)
}

/// As [`insert`], and in the same statement appends `event` to the tenant's audit
/// chain if, and only if, the head is the event's predecessor (as
/// [`audit::append`](crate::audit::append) does). Returns whether the event went in:
/// when it did not (another writer moved the head), the record is inserted all the same
/// and the caller appends the event after the locked head, in the same transaction.
pub async fn insert_with_event(
    tx: &PrimaryTx<'_>,
    record: NewRecord<'_>,
    event: &AuditRow,
) -> Result<(RecordRow, bool), StoreError> {
    insert_statement(tx, record, Some(event)).await
}

/// Creates a record, its tokens and its audit event in one statement, if and only if
/// the tenant's chain head is the event's predecessor (as
/// [`audit::append`](crate::audit::append) checks it), in a tenant-scoped transaction
/// committed in the same round trip ([`Primary::write_scoped`]): the row, its tokens and
/// its event commit together or not at all. `None` when the head had moved (another
/// writer, or a guess from a transaction that rolled back): nothing was written, and the
/// caller writes the record again with its event after the locked head.
/// [`StoreError::Conflict`] when the id exists, [`StoreError::ForeignKey`] when the
/// collection does not.
pub async fn create_with_event(
    primary: &mut Primary,
    record: NewRecord<'_>,
    event: &AuditRow,
) -> Result<Option<(RecordRow, Lsn)>, StoreError> {
    record.check(Some(event))?;
    let values = RecordValues::new(&record);
    let event_values = EventValues::new(event)?;
    let mut statement = Statement::new();
    // The record and its tokens go in only with the event (`from appended`), the event
    // only after the expected head (`moved`).
    let event = event_values.bind(&mut statement);
    let p = values.bind(&mut statement);
    static SQL: ComposedOnce = ComposedOnce::new();
    let sql = SQL.get(|| {
        format!(
            "with {audit_ctes}, {record_ctes} select version, created_at, updated_at from record",
            audit_ctes = event.append_ctes(),
            record_ctes = p.record_ctes("from appended", "where exists (select from record)"),
        )
    });
    let (rows, lsn) = primary
        .write_scoped(record.tenant, sql, statement.params())
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    Ok(Some((record.row(row)?, lsn)))
}

/// A record to insert, for [`insert_with_event`] and [`create_with_event`].
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub tenant: &'a TenantId,
    pub collection: &'a str,
    pub id: &'a str,
    pub public: &'a serde_json::Value,
    pub sealed: &'a [u8],
    pub index: &'a [IndexEntry],
}

impl NewRecord<'_> {
    /// What both insert paths refuse before writing: a bad index, an event of another
    /// tenant.
    fn check(&self, event: Option<&AuditRow>) -> Result<(), StoreError> {
        check_index(self.index)?;
        if event.is_some_and(|event| &event.tenant != self.tenant) {
            return Err(StoreError::Corrupt(
                "a record's audit event belongs to another tenant".into(),
            ));
        }
        Ok(())
    }

    /// The inserted record from the `version, created_at, updated_at` its statement
    /// returned.
    fn row(&self, row: &Row) -> Result<RecordRow, StoreError> {
        Ok(RecordRow {
            id: self.id.to_owned(),
            version: row.try_get(0)?,
            public: self.public.clone(),
            sealed: self.sealed.to_vec(),
            created_at: row.try_get(1)?,
            updated_at: row.try_get(2)?,
        })
    }
}

/// A new record's values as the driver binds them.
struct RecordValues<'a> {
    tenant: &'a str,
    collection: &'a str,
    id: &'a str,
    public: &'a serde_json::Value,
    sealed: &'a [u8],
    fields: Vec<&'a str>,
    tokens: Vec<&'a [u8]>,
}

/// Where [`RecordValues`] went in a composed statement.
struct RecordPlaceholders {
    tenant: Placeholder,
    collection: Placeholder,
    id: Placeholder,
    public: Placeholder,
    sealed: Placeholder,
    fields: Placeholder,
    tokens: Placeholder,
}

impl<'a> RecordValues<'a> {
    fn new(record: &NewRecord<'a>) -> Self {
        let (fields, tokens) = index_arrays(record.index);
        Self {
            tenant: record.tenant.as_str(),
            collection: record.collection,
            id: record.id,
            public: record.public,
            sealed: record.sealed,
            fields,
            tokens,
        }
    }

    fn bind(&'a self, statement: &mut Statement<'a>) -> RecordPlaceholders {
        RecordPlaceholders {
            tenant: statement.bind(&self.tenant),
            collection: statement.bind(&self.collection),
            id: statement.bind(&self.id),
            public: statement.bind(self.public),
            sealed: statement.bind(&self.sealed),
            fields: statement.bind(&self.fields),
            tokens: statement.bind(&self.tokens),
        }
    }
}

impl RecordPlaceholders {
    /// The `record` and `tokens` expressions: the record (version 1) inserted from
    /// `source` (a `from` clause, or nothing) returning `version, created_at, updated_at`,
    /// and its tokens (see [`wanted_tokens`]) where `condition` holds (a `where` clause, or
    /// nothing).
    fn record_ctes(&self, source: &str, condition: &str) -> String {
        let Self {
            tenant,
            collection,
            id,
            public,
            sealed,
            fields,
            tokens,
        } = self;
        format!(
            "record as (
                 insert into records (tenant_id, collection, record_id, public, sealed)
                 select {tenant}::text, {collection}::text, {id}::text, {public}::jsonb,
                        {sealed}::bytea {source}
                 returning version, created_at, updated_at
             ), tokens as (
                 insert into record_index (tenant_id, collection, field, token, record_id)
                 select {tenant}, {collection}, t.field, t.token, {id} from ({wanted}) as t
                 {condition}
                 on conflict do nothing
             )",
            wanted = wanted_tokens(
                &fields.to_string(),
                &tokens.to_string(),
                &public.to_string()
            ),
        )
    }
}

async fn insert_statement(
    tx: &PrimaryTx<'_>,
    record: NewRecord<'_>,
    event: Option<&AuditRow>,
) -> Result<(RecordRow, bool), StoreError> {
    record.check(event)?;
    let values = RecordValues::new(&record);
    let event_values = event.map(EventValues::new).transpose()?;
    let mut statement = Statement::new();
    let p = values.bind(&mut statement);
    // The tokens' foreign key is checked at the end of the statement, after the record
    // is in. A token listed twice is stored once. Data-modifying CTEs all run, whether
    // or not the final select reads them.
    static WITH_EVENT: ComposedOnce = ComposedOnce::new();
    static WITHOUT_EVENT: ComposedOnce = ComposedOnce::new();
    let sql = match &event_values {
        Some(event_values) => {
            let event = event_values.bind(&mut statement);
            WITH_EVENT.get(|| {
                format!(
                    "with {record_ctes}, {audit_ctes}
                     select version, created_at, updated_at, (select count(*) from appended)
                     from record",
                    record_ctes = p.record_ctes("", ""),
                    audit_ctes = event.append_ctes(),
                )
            })
        }
        None => WITHOUT_EVENT.get(|| {
            format!(
                "with {record_ctes} select version, created_at, updated_at, 0::bigint from record",
                record_ctes = p.record_ctes("", ""),
            )
        }),
    };
    let prepared = tx.prepare_cached(sql).await?;
    let row = tx.client().query_one(&prepared, statement.params()).await?;
    let appended: i64 = row.try_get(3)?;
    Ok((record.row(&row)?, appended == 1))
}

/// Locks the record for the rest of `tx` and returns its version (`None`: no such
/// record). For callers that read what hangs off a record (its files) before deleting
/// it: while the lock is held, nothing can be added to it.
pub async fn lock(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    collection: &str,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    let statement = tx.prepare_cached(LOCK).await?;
    Ok(tx
        .client()
        .query_opt(&statement, &[&tenant.as_str(), &collection, &id])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?)
}

const LOCK: &str = "select version from records
                    where tenant_id = $1 and collection = $2 and record_id = $3 for update";

/// The record, read on `reader` confined to `tenant` in one round trip (see
/// [`Reader::query_scoped`](crate::Reader::query_scoped)).
pub async fn get_scoped(
    reader: &mut crate::Reader,
    tenant: &TenantId,
    collection: &str,
    id: &str,
) -> Result<Option<RecordRow>, StoreError> {
    let rows = reader
        .query_scoped(tenant, &GET, &[&tenant.as_str(), &collection, &id])
        .await?;
    rows.first().map(decode).transpose()
}

static GET: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "select {COLUMNS} from records where tenant_id = $1 and collection = $2 and record_id = $3"
    )
});

pub async fn get<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    collection: &str,
    id: &str,
) -> Result<Option<RecordRow>, StoreError> {
    client
        .query_typed_opt(
            &GET,
            &[
                (&tenant.as_str(), Type::TEXT),
                (&collection, Type::TEXT),
                (&id, Type::TEXT),
            ],
        )
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Replaces the record's fields and tokens and bumps its version, if it exists and (when
/// `expected_version` is given) is at that version.
#[allow(clippy::too_many_arguments)] // the record's parts, each a different column
pub async fn update(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    collection: &str,
    id: &str,
    expected_version: Option<i64>,
    public: &serde_json::Value,
    sealed: &[u8],
    index: &[IndexEntry],
) -> Result<Change, StoreError> {
    // The lock comes first, in its own statement: the update's snapshot is then taken
    // after any concurrent writer of this record committed, so the tokens it replaces are
    // the current ones. Tokens to keep are left alone, so the delete and the insert touch
    // disjoint rows and their order within the statement does not matter.
    check_index(index)?;
    let lock = tx.prepare_cached(LOCK).await?;
    let replace = tx
        .prepare_cached(&format!(
            "with updated as (
                 update records set version = version + 1, public = $5, sealed = $6, updated_at = now()
                 where tenant_id = $1 and collection = $2 and record_id = $3
                   and ($4::bigint is null or version = $4)
                 returning version, created_at, updated_at
             ), wanted as ({wanted}
             ), stale as (
                 delete from record_index i
                 where exists (select 1 from updated)
                   and i.tenant_id = $1 and i.collection = $2 and i.record_id = $3
                   and not exists (
                       select 1 from wanted w where w.field = i.field and w.token = i.token)
             ), fresh as (
                 insert into record_index (tenant_id, collection, field, token, record_id)
                 select $1, $2, w.field, w.token, $3 from wanted w
                 where exists (select 1 from updated)
                 on conflict do nothing
             )
             select version, created_at, updated_at from updated",
            wanted = wanted_tokens("$7", "$8", "$5"),
        ))
        .await?;
    let (fields, tokens) = index_arrays(index);
    let key: [&(dyn ToSql + Sync); 3] = [&tenant.as_str(), &collection, &id];
    let params: [&(dyn ToSql + Sync); 8] = [
        key[0],
        key[1],
        key[2],
        &expected_version,
        public,
        &sealed,
        &fields,
        &tokens,
    ];
    let client = tx.client();
    // Pipelined: tokio-postgres sends requests in the order their futures are first
    // polled, and `try_join!` polls in order, so the server runs the lock first.
    let (current, updated) = futures::try_join!(
        client.query_opt(&lock, &key),
        client.query_opt(&replace, &params),
    )?;
    let Some(current) = current else {
        return Ok(Change::NotFound);
    };
    let Some(updated) = updated else {
        return Ok(Change::VersionMismatch {
            current: current.try_get(0)?,
        });
    };
    Ok(Change::Done(RecordRow {
        id: id.to_owned(),
        version: updated.try_get(0)?,
        public: public.clone(),
        sealed: sealed.to_vec(),
        created_at: updated.try_get(1)?,
        updated_at: updated.try_get(2)?,
    }))
}

/// Deletes the record, if it exists and (when `expected_version` is given) is at that
/// version; its tokens and file rows go with it (the objects are the caller's to delete:
/// list them under [`lock`] first).
pub async fn delete(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    collection: &str,
    id: &str,
    expected_version: Option<i64>,
) -> Result<Change, StoreError> {
    let statement = tx
        .prepare_cached(&format!(
            "delete from records
             where tenant_id = $1 and collection = $2 and record_id = $3
               and ($4::bigint is null or version = $4)
             returning {COLUMNS}"
        ))
        .await?;
    let client = tx.client();
    if let Some(row) = client
        .query_opt(
            &statement,
            &[&tenant.as_str(), &collection, &id, &expected_version],
        )
        .await?
    {
        return Ok(Change::Done(decode(&row)?));
    }
    // Nothing deleted: tell a missing record from a version mismatch.
    let statement = tx
        .prepare_cached(
            "select version from records
             where tenant_id = $1 and collection = $2 and record_id = $3",
        )
        .await?;
    Ok(
        match client
            .query_opt(&statement, &[&tenant.as_str(), &collection, &id])
            .await?
        {
            Some(row) => Change::VersionMismatch {
                current: row.try_get(0)?,
            },
            None => Change::NotFound,
        },
    )
}

/// A page of the collection's records in id order, after `after`.
pub async fn list<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    collection: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<RecordRow>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from records
         where tenant_id = $1 and collection = $2 and ($3::text is null or record_id > $3)
         order by record_id limit $4"
    );
    client
        .query_typed(
            &sql,
            &[
                (&tenant.as_str(), Type::TEXT),
                (&collection, Type::TEXT),
                (&after, Type::TEXT),
                (&limit, Type::INT8),
            ],
        )
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// A page, in id order, of the records whose sealed `field` has blind-index `token`.
#[allow(clippy::too_many_arguments)] // a query and its page
pub async fn find_by_token<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    collection: &str,
    field: &str,
    token: &[u8; 32],
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<RecordRow>, StoreError> {
    let sql = "select r.record_id, r.version, r.public, r.sealed, r.created_at, r.updated_at
               from record_index i
               join records r on r.tenant_id = i.tenant_id and r.collection = i.collection
                             and r.record_id = i.record_id
               where i.tenant_id = $1 and i.collection = $2 and i.field = $3 and i.token = $4
                 and ($5::text is null or i.record_id > $5)
               order by i.record_id limit $6";
    client
        .query_typed(
            sql,
            &[
                (&tenant.as_str(), Type::TEXT),
                (&collection, Type::TEXT),
                (&field, Type::TEXT),
                (&token.as_slice(), Type::BYTEA),
                (&after, Type::TEXT),
                (&limit, Type::INT8),
            ],
        )
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// A page, in id order, of the records whose public `field` equals `value`, compared as
/// jsonb's canonical text through the field's token: `1` and `"1"` differ, object keys may
/// come in any order, and numbers match as jsonb prints them (`1` does not find `1.0`).
/// No recheck of `public` (SHA-256 does not collide in practice): the planner then walks
/// the token index in id order and stops at the page's end.
#[allow(clippy::too_many_arguments)] // a query and its page
pub async fn find_by_public<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    collection: &str,
    field: &str,
    value: &serde_json::Value,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<RecordRow>, StoreError> {
    let sql = format!(
        "select r.record_id, r.version, r.public, r.sealed, r.created_at, r.updated_at
         from record_index i
         join records r on r.tenant_id = i.tenant_id and r.collection = i.collection
                       and r.record_id = i.record_id
         where i.tenant_id = $1 and i.collection = $2
           and i.field = '{PUBLIC_TOKEN_PREFIX}' || $3::text and i.token = {token}
           and ($5::text is null or i.record_id > $5)
         order by i.record_id limit $6",
        token = public_token("$4::jsonb"),
    );
    client
        .query_typed(
            &sql,
            &[
                (&tenant.as_str(), Type::TEXT),
                (&collection, Type::TEXT),
                (&field, Type::TEXT),
                (value, Type::JSONB),
                (&after, Type::TEXT),
                (&limit, Type::INT8),
            ],
        )
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// How many records the tenant has, across collections.
/// Whether the collection holds any record.
pub async fn any_in_collection(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    collection: &str,
) -> Result<bool, StoreError> {
    Ok(tx
        .client()
        .query_typed_one(
            "select exists (select from records where tenant_id = $1 and collection = $2)",
            &[(&tenant.as_str(), Type::TEXT), (&collection, Type::TEXT)],
        )
        .await?
        .try_get(0)?)
}

/// Whether any record of the collection holds `field` in its unencrypted part (written
/// while the field was public, or before it was removed from the schema).
pub async fn any_with_unencrypted_field(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    collection: &str,
    field: &str,
) -> Result<bool, StoreError> {
    Ok(tx
        .client()
        .query_typed_one(
            "select exists (select from records
                            where tenant_id = $1 and collection = $2 and public ? $3)",
            &[
                (&tenant.as_str(), Type::TEXT),
                (&collection, Type::TEXT),
                (&field, Type::TEXT),
            ],
        )
        .await?
        .try_get(0)?)
}

pub async fn count<C: GenericClient>(client: &C, tenant: &TenantId) -> Result<i64, StoreError> {
    Ok(client
        .query_typed_one(
            "select count(*) from records where tenant_id = $1",
            &[(&tenant.as_str(), Type::TEXT)],
        )
        .await?
        .try_get(0)?)
}
