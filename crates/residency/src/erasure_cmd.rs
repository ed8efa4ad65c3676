//! `residency erasures reapply` (operator token): re-applies the region's erasure ledger
//! (the audit bucket's entries) to its database, `POST /v1/subjects/erasures/reapply`.
//! Every node does it at start; this is the on-demand run after a restore made while nodes
//! were up, or once the audit bucket is reachable again (`docs/privacy.md`).

use http::{Method, StatusCode};
use wire::api::ErasureLedgerReapplied;

use crate::operator::output::fields;
use crate::operator::{OperatorFlags, print};

#[derive(Debug, clap::Args)]
pub(crate) struct ErasuresArgs {
    #[command(subcommand)]
    command: ErasuresCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ErasuresCommand {
    /// Erase again every subject of the endpoint region's erasure ledger that its database
    /// has not applied (a database restored from a backup older than the erasure).
    Reapply(ReapplyArgs),
}

#[derive(Debug, clap::Args)]
struct ReapplyArgs {
    #[command(flatten)]
    operator: OperatorFlags,
}

pub(crate) async fn run(args: ErasuresArgs) -> anyhow::Result<()> {
    match args.command {
        ErasuresCommand::Reapply(args) => {
            let api = args.operator.api()?;
            let url = api.url(&["v1", "subjects", "erasures", "reapply"], &[])?;
            let answer = api
                .call::<ErasureLedgerReapplied>(Method::POST, url, None::<&()>, StatusCode::OK)
                .await?;
            print(args.operator.connection.json, &answer, reapplied_fields)
        }
    }
}

fn reapplied_fields(report: &ErasureLedgerReapplied) -> String {
    fields(&[
        ("ledger entries", report.entries.to_string()),
        ("re-applied", report.reapplied.to_string()),
        ("records erased", report.records_erased.to_string()),
        ("skipped (tenant not here)", report.skipped.to_string()),
    ])
}
