//! `residency subjects`: a compliance officer's data-subject requests over a node's API
//! (with the tenant's admin key, found like the operator commands find theirs) and an
//! offline check. `export` pages through the signed subject export (`GET
//! /v1/tenants/{tenant}/subjects/{subject}/export`) into a file, one signed page after
//! another, each as the node sent it; `verify-export` checks such a file (or one saved
//! page) against the region's published audit keys: every page's signature, and that the
//! pages are one export in order. `erase` asks `POST .../subjects/{subject}/erase` and
//! prints what was erased, or the job erasing a large subject. The subject is personal
//! data: it goes into the request's path (percent-encoded as one segment) and nowhere
//! else: no error, summary or log line names it (summaries name its token).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::audit_cmd::{KeySource, load_keys};
use crate::operator::{self, TenantKeyFlags};

#[derive(Debug, clap::Args)]
pub(crate) struct SubjectsArgs {
    #[command(subcommand)]
    command: SubjectsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SubjectsCommand {
    /// Write everything about one person (the signed DSAR export, every page) to a file.
    #[command(after_help = operator::EXIT_STATUS)]
    Export(ExportArgs),
    /// Erase one person's records and files in every collection of the tenant.
    #[command(after_help = operator::EXIT_STATUS)]
    Erase(EraseArgs),
    /// Verify a saved subject export (DSAR) offline: a file `subjects export` wrote, or one
    /// page as the API answered it.
    VerifyExport(VerifyExportArgs),
}

/// Which person of which tenant.
#[derive(Debug, clap::Args)]
struct SubjectFlags {
    /// The tenant's id.
    #[arg(long, value_name = "TENANT")]
    tenant: String,
    /// The subject's value, as the collections' `subject_field` holds it (an e-mail
    /// address, a customer number); matched after the documented normalization.
    #[arg(long, value_name = "SUBJECT")]
    subject: String,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    who: SubjectFlags,
    /// The file to write (refused if it exists): one signed page per line, for
    /// `residency subjects verify-export`. It holds the person's data, opened: it is
    /// created readable by its owner only.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Records per page (1 to 100; default: the node's, 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    limit: Option<u32>,
    #[command(flatten)]
    access: TenantKeyFlags,
}

#[derive(Debug, clap::Args)]
struct EraseArgs {
    #[command(flatten)]
    who: SubjectFlags,
    #[command(flatten)]
    access: TenantKeyFlags,
}

#[derive(Debug, clap::Args)]
struct VerifyExportArgs {
    /// The export: a file `residency subjects export` wrote, or a page as returned by
    /// `GET /v1/tenants/{tenant}/subjects/{subject}/export`.
    #[arg(long)]
    file: PathBuf,
    #[command(flatten)]
    keys: KeySource,
}

pub(crate) async fn run(args: SubjectsArgs) -> anyhow::Result<()> {
    match args.command {
        SubjectsCommand::Export(args) => export(args).await,
        SubjectsCommand::Erase(args) => erase(args).await,
        SubjectsCommand::VerifyExport(args) => verify_export(args).await,
    }
}

impl SubjectFlags {
    /// The path segments of `/v1/tenants/{tenant}/subjects/{subject}/{action}`; a blank
    /// subject is refused here (without echoing it), like the node refuses it.
    fn segments<'a>(&'a self, action: &'a str) -> anyhow::Result<[&'a str; 6]> {
        if self.subject.trim().is_empty() {
            bail!("the subject is empty: pass --subject with the person's value");
        }
        Ok([
            "v1",
            "tenants",
            &self.tenant,
            "subjects",
            &self.subject,
            action,
        ])
    }
}

/// A file being written: `<out>.partial`, renamed to `out` once complete, removed if the
/// export fails, so that `out` only ever holds a whole export.
struct PartialFile {
    partial: PathBuf,
    out: PathBuf,
    file: Option<std::fs::File>,
}

impl PartialFile {
    fn create(out: &Path) -> anyhow::Result<Self> {
        if out.exists() {
            bail!(
                "{} exists: choose another --out (an export is never written over a file)",
                out.display()
            );
        }
        let mut partial = out.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&partial)
            .with_context(|| format!("create {}", partial.display()))?;
        Ok(Self {
            partial,
            out: out.to_owned(),
            file: Some(file),
        })
    }

    fn write_line(&mut self, line: &str) -> anyhow::Result<()> {
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(line.trim_end().as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .with_context(|| format!("write {}", self.partial.display()))
    }

    fn finish(mut self) -> anyhow::Result<()> {
        let file = self.file.take().expect("open until finished");
        file.sync_all()
            .with_context(|| format!("write {}", self.partial.display()))?;
        drop(file);
        std::fs::rename(&self.partial, &self.out).with_context(|| {
            format!(
                "rename {} to {}",
                self.partial.display(),
                self.out.display()
            )
        })
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Not finished: leave no half export behind (it holds personal data).
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let api = args.access.api()?;
    let segments = args.who.segments("export")?;
    let mut file = PartialFile::create(&args.out)?;
    let limit = args.limit.map(|limit| limit.to_string());
    let mut cursor: Option<String> = None;
    let (mut pages, mut records) = (0u64, 0u64);
    let mut token = String::new();
    loop {
        let url = api.url(
            &segments,
            &[("limit", limit.clone()), ("cursor", cursor.clone())],
        )?;
        let answer = api
            .get::<wire::api::SubjectExport>(url, StatusCode::OK)
            .await
            .with_context(|| format!("export the subject of tenant {}", args.who.tenant))?;
        let page = &answer.value;
        if page.cursor != cursor {
            bail!("the node answered page {} for another cursor", pages + 1);
        }
        file.write_line(&answer.raw)?;
        pages += 1;
        records += page.records.len() as u64;
        token.clone_from(&page.subject_token);
        match &page.next_cursor {
            Some(next) if Some(next) == cursor.as_ref() => {
                bail!("the node repeated the cursor of page {pages}")
            }
            Some(next) => cursor = Some(next.clone()),
            None => break,
        }
    }
    file.finish()?;
    let out = args.out.display().to_string();
    if args.access.connection.json {
        println!(
            "{}",
            json!({"file": out, "pages": pages, "records": records, "subject_token": token})
        );
    } else {
        println!(
            "wrote {records} records in {pages} signed pages to {out} (subject token {token}); \
             check it with `residency subjects verify-export --file {out} --keys-url <node>/v1/audit/keys`"
        );
    }
    Ok(())
}

async fn erase(args: EraseArgs) -> anyhow::Result<()> {
    let api = args.access.api()?;
    let url = api.url(&args.who.segments("erase")?, &[])?;
    let (status, answer) = api
        .call_accepting::<Value>(
            Method::POST,
            url,
            None::<&()>,
            &[StatusCode::OK, StatusCode::ACCEPTED],
        )
        .await
        .with_context(|| format!("erase the subject of tenant {}", args.who.tenant))?;
    operator::print(args.access.connection.json, &answer, |body| {
        if status == StatusCode::ACCEPTED {
            erasure_job(body)
        } else {
            format!(
                "erased: {} records, {} files; audit seq {}\n",
                count(&body["records_erased"]),
                count(&body["files_erased"]),
                count(&body["audit_seq"])
            )
        }
    })
}

/// A number of the answer, or `?` when the node left it out.
fn count(value: &Value) -> String {
    value
        .as_u64()
        .map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// The `202` of a subject too large to erase at once: the job erasing it and how far it is
/// (the job's view, top level or under `job`).
fn erasure_job(body: &Value) -> String {
    let job = body
        .get("job")
        .filter(|job| job.is_object())
        .unwrap_or(body);
    let id = job
        .get("id")
        .or_else(|| body.get("job_id"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let state = job
        .get("state")
        .or_else(|| job.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("queued");
    let progress = job.get("progress").unwrap_or(job);
    let done = count(&progress["done"]);
    let total = count(&progress["total"]);
    format!(
        "erasure accepted: job {id} is erasing the subject ({state}, {done} of {total} done); \
         follow it with `residency jobs get {id}`\n"
    )
}

/// Every page of the file, in order: a file `export` wrote (one per line) or one saved
/// page (any JSON layout). A page that does not parse is named by its number and place,
/// never by its content.
fn read_pages(raw: &[u8]) -> anyhow::Result<Vec<wire::api::SubjectExport>> {
    let mut pages = Vec::new();
    for page in serde_json::Deserializer::from_slice(raw).into_iter() {
        let page: wire::api::SubjectExport = page.map_err(|err| {
            anyhow!(
                "export rejected: page {} is not a subject export (line {}, column {})",
                pages.len() + 1,
                err.line(),
                err.column()
            )
        })?;
        pages.push(page);
    }
    if pages.is_empty() {
        bail!("export rejected: the file holds no subject export");
    }
    Ok(pages)
}

async fn verify_export(args: VerifyExportArgs) -> anyhow::Result<()> {
    let keys = load_keys(&args.keys).await?;
    let raw = std::fs::read(&args.file).with_context(|| format!("read {}", args.file.display()))?;
    let pages = read_pages(&raw)?;
    for (index, page) in pages.iter().enumerate() {
        let number = index + 1;
        let payload = page
            .signed_payload()
            .context("encode the export for verification")?;
        let signature = audit::Signature::from_base64(&page.signature).map_err(|_| {
            anyhow!("export rejected: page {number}: the signature is not valid base64")
        })?;
        if !keys.verify_signature(&page.key_id, &page.region, &payload, &signature) {
            bail!(
                "export rejected: page {number}: the signature does not verify with key {} of region {}",
                page.key_id,
                page.region
            );
        }
    }
    // Pages signed one by one are one export only if they are of one subject and each was
    // asked with the cursor the page before it gave.
    for (index, pair) in pages.windows(2).enumerate() {
        let (before, page) = (&pair[0], &pair[1]);
        let number = index + 2;
        if (&page.tenant, &page.region, &page.subject_token)
            != (&before.tenant, &before.region, &before.subject_token)
        {
            bail!("export rejected: page {number} is of another tenant, region or subject");
        }
        if page.cursor.is_none() || page.cursor != before.next_cursor {
            bail!(
                "export rejected: page {number} does not follow page {} (a page is missing, repeated or out of order)",
                number - 1
            );
        }
    }
    let first = &pages[0];
    let last = &pages[pages.len() - 1];
    let records: usize = pages.iter().map(|page| page.records.len()).sum();
    let mut signers: Vec<&str> = pages.iter().map(|page| page.key_id.as_str()).collect();
    signers.sort_unstable();
    signers.dedup();
    // The subject is personal data: the summary names its token, never the value.
    println!(
        "export intact: tenant {}, subject token {}, {records} records in {} pages, generated {}, signed by {}{}{}",
        first.tenant,
        first.subject_token,
        pages.len(),
        first.generated_at,
        signers.join(", "),
        if first.cursor.is_some() {
            " (starts after an earlier page)"
        } else {
            ""
        },
        if last.next_cursor.is_some() {
            " (more pages follow)"
        } else {
            ""
        }
    );
    Ok(())
}
