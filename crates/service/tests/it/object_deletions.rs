//! The outbox of object deletions through a failing object store: a deletion whose object
//! cannot be deleted after the commit keeps its row (the file is gone for the caller, the
//! object is not yet); a sweeper later deletes the object and the row, backing off while
//! the store keeps failing; rows are claimed by one sweeper at a time; an upload whose row
//! never commits leaves its object named for the sweeper, due after a grace period.

use std::time::{Duration, SystemTime};

use envelope::objects::ObjectStoreError;
use service::object_deletions::SweepReport;
use service::{ObjectSweepSettings, ObjectSweeper, ServiceError};
use store::object_deletions::{self, DeletionFailure, DeletionReason, PendingDeletion};

use crate::failing_backends::{Fixture, file_name, fixture};

impl Fixture {
    async fn pending(&self) -> Vec<PendingDeletion> {
        let primary = self.db.primary().get().await.expect("primary");
        object_deletions::pending_for_tenant(primary.client(), &self.caller.tenant)
            .await
            .expect("read the outbox")
    }

    /// A sweeper over the fixture's (failing) store, whose backoff starts at an hour.
    fn sweeper(&self) -> ObjectSweeper {
        ObjectSweeper::new(
            self.db.clone(),
            self.objects.clone(),
            ObjectSweepSettings {
                backoff_base: Duration::from_secs(3600),
                backoff_cap: Duration::from_secs(7200),
                ..ObjectSweepSettings::default()
            },
            self.metrics.clone(),
        )
    }

    /// Makes every row due now, as time passing would.
    async fn make_due(&self) {
        let primary = self.db.primary().get().await.expect("primary");
        primary
            .client()
            .execute("update object_deletions set next_attempt_at = now()", &[])
            .await
            .expect("make rows due");
    }

    async fn delete(&self, name: &str) -> Result<(), ServiceError> {
        self.service
            .delete_file(&self.caller, "letters", &self.record_id(), &file_name(name))
            .await
            .map(|_| ())
    }
}

fn unavailable() -> ObjectStoreError {
    ObjectStoreError::Unavailable("injected".to_owned())
}

#[tokio::test]
async fn a_file_deletion_whose_object_survives_the_commit_keeps_its_row_until_a_sweeper_deletes_it()
{
    let f = fixture().await;
    f.put("letter.txt", b"Dear Ada, first draft.")
        .await
        .expect("upload");
    // Replaced: the old object goes at once, and the upload's own row went with its commit.
    f.put("letter.txt", b"Dear Ada, second draft.")
        .await
        .expect("replace");
    assert_eq!(f.stored_objects().await, 1);
    assert!(f.pending().await.is_empty(), "nothing pending");

    f.objects.fail_next(1, unavailable());
    f.delete("letter.txt").await.expect("the deletion commits");
    assert!(
        matches!(
            f.get("letter.txt").await,
            Err(ServiceError::NotFound { what: "file" })
        ),
        "the file is gone for the caller"
    );
    assert_eq!(f.stored_objects().await, 1, "its object is still stored");
    let pending = f.pending().await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].reason, DeletionReason::FileDeleted);
    assert_eq!(pending[0].attempts, 0);
    assert!(
        pending[0]
            .object_key
            .starts_with(&format!("tenants/{}/", f.caller.tenant))
    );

    let report = f.sweeper().sweep_batch().await.expect("sweep");
    assert_eq!(
        report,
        SweepReport {
            claimed: 1,
            deleted: 1,
            failed: 0
        }
    );
    assert_eq!(
        f.stored_objects().await,
        0,
        "the sweeper deleted the object"
    );
    assert!(f.pending().await.is_empty(), "and removed its row");
}

#[tokio::test]
async fn a_record_deletion_names_its_files_objects_and_a_failing_sweep_backs_off_and_keeps_them() {
    let f = fixture().await;
    f.put("a.txt", b"Dear Ada.").await.expect("upload");
    f.put("b.txt", b"Dear Grace.").await.expect("upload");
    // Each object's first deletion call fails: both stay after the commit.
    f.objects.fail_next(2, unavailable());
    f.service
        .delete_record(&f.caller, "letters", &f.record_id(), None)
        .await
        .expect("the deletion commits");
    assert_eq!(f.stored_objects().await, 2);
    let pending = f.pending().await;
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(
        pending
            .iter()
            .all(|row| row.reason == DeletionReason::RecordDeleted)
    );

    // The store fails once more: one object goes, the other's row waits for its backoff.
    let sweeper = f.sweeper();
    f.objects.fail_next(1, unavailable());
    let before = SystemTime::now();
    let report = sweeper.sweep_batch().await.expect("sweep");
    assert_eq!(
        report,
        SweepReport {
            claimed: 2,
            deleted: 1,
            failed: 1
        }
    );
    assert_eq!(f.stored_objects().await, 1);
    let left = f.pending().await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].attempts, 1);
    assert_eq!(left[0].last_error, Some(DeletionFailure::Unavailable));
    assert!(
        left[0].next_attempt_at >= before + Duration::from_secs(3500),
        "backed off by the base"
    );
    assert_eq!(
        sweeper.sweep_batch().await.expect("sweep").claimed,
        0,
        "not due before its backoff ends"
    );

    // Its time come, the next sweep deletes it.
    f.make_due().await;
    let report = sweeper.sweep_batch().await.expect("sweep");
    assert_eq!((report.claimed, report.deleted), (1, 1));
    assert_eq!(f.stored_objects().await, 0);
    assert!(f.pending().await.is_empty());

    sweeper.publish_stats().await.expect("count the outbox");
    let metrics = f.metrics.encode();
    for (name, label, value) in [
        (
            "residency_object_deletions_total{",
            "outcome=\"deleted\"",
            "2",
        ),
        (
            "residency_object_deletions_total{",
            "outcome=\"failed\"",
            "3",
        ),
        ("residency_object_deletions_pending{", "", "0"),
        (
            "residency_object_deletions_oldest_pending_seconds{",
            "",
            "0.0",
        ),
    ] {
        let line = metrics
            .lines()
            .find(|line| line.starts_with(name) && line.contains(label))
            .unwrap_or_else(|| panic!("no {name}{label} in {metrics}"));
        assert!(line.ends_with(&format!(" {value}")), "{line}");
    }
}

#[tokio::test]
async fn a_claimed_row_is_leased_to_one_sweeper_until_its_lease_ends() {
    let f = fixture().await;
    for name in ["a.txt", "b.txt", "c.txt"] {
        f.put(name, b"Dear Ada.").await.expect("upload");
    }
    f.objects.fail_next(3, unavailable());
    f.service
        .delete_record(&f.caller, "letters", &f.record_id(), None)
        .await
        .expect("the deletion commits");
    let primary = f.db.primary().get().await.expect("primary");
    let lease = Duration::from_secs(60);
    let first = object_deletions::claim_due(&primary, 2, lease)
        .await
        .expect("claim");
    let second = object_deletions::claim_due(&primary, 2, lease)
        .await
        .expect("claim");
    assert_eq!((first.len(), second.len()), (2, 1));
    assert!(first.iter().all(|row| !second.contains(row)));
    assert!(
        object_deletions::claim_due(&primary, 2, lease)
            .await
            .expect("claim")
            .is_empty(),
        "every row is leased"
    );
    // A sweeper that died holding them: their lease ends, another takes them.
    f.make_due().await;
    let retaken = object_deletions::claim_due(&primary, 10, lease)
        .await
        .expect("claim");
    assert_eq!(retaken.len(), 3);
    assert!(retaken.iter().all(|row| row.attempts == 2));
}

#[tokio::test]
async fn an_upload_whose_row_never_commits_leaves_its_object_to_the_outbox_until_it_is_gone() {
    let f = fixture().await;
    // The record is deleted while the body streams, and the store fails the next call
    // (the abandoned object's deletion): the object stays, named for the sweeper.
    let service = f.service.clone();
    let caller = f.caller.clone();
    let record = f.record_id();
    let objects = f.objects.clone();
    let body: envelope::objects::ByteStream = Box::pin(futures::stream::once(async move {
        service
            .delete_record(&caller, "letters", &record, None)
            .await
            .expect("delete the record mid-upload");
        objects.fail_next(1, unavailable());
        Ok(bytes::Bytes::from_static(
            b"Dear Ada, to a record that is gone.",
        ))
    }));
    let err = f
        .service
        .put_file(
            &f.caller,
            "letters",
            &f.record_id(),
            &file_name("letter.txt"),
            None,
            body,
            None,
        )
        .await
        .expect_err("the record is gone");
    assert!(
        matches!(err, ServiceError::NotFound { what: "record" }),
        "{err:?}"
    );
    assert_eq!(
        f.stored_objects().await,
        1,
        "the upload's object is still stored"
    );
    let pending = f.pending().await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].reason, DeletionReason::UploadAbandoned);
    assert!(
        pending[0].next_attempt_at > SystemTime::now() + Duration::from_secs(600),
        "not due while a commit of its row could still be running"
    );
    assert_eq!(f.sweeper().sweep_batch().await.expect("sweep").claimed, 0);

    f.make_due().await;
    let report = f.sweeper().sweep_batch().await.expect("sweep");
    assert_eq!((report.claimed, report.deleted), (1, 1));
    assert_eq!(f.stored_objects().await, 0);
    assert!(f.pending().await.is_empty());
}
