//! The KMS contract, run against the local KMS and AWS KMS on moto, plus what only one
//! backend has: master key rotation (local), key state and reachability (AWS), and the
//! failure-injecting wrapper.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envelope::KeyPurpose;
use envelope::aws::{AwsCredentials, AwsSettings, kms_client};
use envelope::kms::aws::AwsKms;
use envelope::kms::faulty::FaultyKms;
use envelope::kms::local::LocalKms;
use envelope::kms::{Kms, KmsError, KmsKind, WrappedKey, tenant_key_context};

use crate::support::{FOREIGN, HOME, create_kms_key, moto_settings, region, tenant};

/// What every KMS must do. `foreign` is another region's KMS: its keys must be refused.
async fn kms_contract(kms: Arc<dyn Kms>, foreign: Arc<dyn Kms>) {
    kms.check().await.expect("check passes");
    let home = kms.region().clone();
    assert_ne!(foreign.region(), &home);

    let owner = tenant();
    let context = tenant_key_context(&owner, &home, KeyPurpose::Data);
    let generated = kms.generate_data_key(&context).await.expect("generate");
    assert!(!generated.wrapped.key_id.is_empty());
    assert!(!generated.wrapped.ciphertext.is_empty());
    let unwrapped = kms
        .decrypt(&generated.wrapped, &context)
        .await
        .expect("decrypt");
    assert_eq!(
        unwrapped.expose(),
        generated.material.expose(),
        "round trip gives the same key"
    );
    let printed = format!("{generated:?}");
    assert!(
        !printed.contains(&format!("{:?}", generated.material.expose())),
        "{printed}"
    );

    // Any other context is refused: another tenant, another region, another purpose.
    let wrong_contexts = [
        tenant_key_context(&tenant(), &home, KeyPurpose::Data),
        tenant_key_context(&owner, foreign.region(), KeyPurpose::Data),
        tenant_key_context(&owner, &home, KeyPurpose::Index),
    ];
    for wrong in &wrong_contexts {
        let err = kms
            .decrypt(&generated.wrapped, wrong)
            .await
            .expect_err("wrong context");
        assert_eq!(err, KmsError::Denied, "context {wrong:?}");
    }

    // A flipped bit in the authentication tag.
    let mut tampered = generated.wrapped.clone();
    *tampered.ciphertext.last_mut().expect("non-empty") ^= 0x01;
    assert_eq!(
        kms.decrypt(&tampered, &context)
            .await
            .expect_err("tampered"),
        KmsError::Denied
    );

    // Another region's wrapped key is refused as foreign, before any unwrapping.
    let foreign_context = tenant_key_context(&owner, foreign.region(), KeyPurpose::Data);
    let foreign_key = foreign
        .generate_data_key(&foreign_context)
        .await
        .expect("foreign generate");
    for attempt in [&foreign_context, &context] {
        match kms.decrypt(&foreign_key.wrapped, attempt).await {
            Err(KmsError::ForeignKey { key_id, region }) => {
                assert_eq!(key_id, foreign_key.wrapped.key_id);
                assert_eq!(region, home.to_string());
            }
            other => panic!("expected ForeignKey, got {other:?}"),
        }
    }
    assert!(matches!(
        kms.re_encrypt(&foreign_key.wrapped, &foreign_context).await,
        Err(KmsError::ForeignKey { .. })
    ));

    // Rewrapping keeps the material and the context binding.
    let rewrapped = kms
        .re_encrypt(&generated.wrapped, &context)
        .await
        .expect("re_encrypt");
    assert_ne!(rewrapped.ciphertext, generated.wrapped.ciphertext);
    let again = kms
        .decrypt(&rewrapped, &context)
        .await
        .expect("decrypt rewrapped");
    assert_eq!(again.expose(), generated.material.expose());
    assert_eq!(
        kms.decrypt(&rewrapped, &wrong_contexts[0])
            .await
            .expect_err("still bound"),
        KmsError::Denied
    );
    assert_eq!(
        kms.re_encrypt(&generated.wrapped, &wrong_contexts[0])
            .await
            .expect_err("bound"),
        KmsError::Denied
    );

    // Two keys are different keys.
    let second = kms
        .generate_data_key(&context)
        .await
        .expect("generate again");
    assert_ne!(second.material.expose(), generated.material.expose());
}

fn local_kms(dir: &std::path::Path, region_name: &str) -> Arc<LocalKms> {
    Arc::new(LocalKms::open_or_create(dir, region(region_name)).expect("open local KMS"))
}

#[tokio::test]
async fn local_kms_meets_the_contract() {
    let (home_dir, foreign_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let kms = local_kms(home_dir.path(), HOME);
    assert_eq!(kms.kind(), KmsKind::Local);
    assert!(
        kms.key_id().starts_with("local:eu-central-1:"),
        "{}",
        kms.key_id()
    );
    kms_contract(kms, local_kms(foreign_dir.path(), FOREIGN)).await;
}

#[tokio::test]
async fn aws_kms_on_moto_meets_the_contract() {
    let (_home_arn, home_alias) = create_kms_key(HOME).await;
    let (foreign_arn, _) = create_kms_key(FOREIGN).await;
    let kms = Arc::new(AwsKms::new(&moto_settings(HOME), home_alias.clone()));
    assert_eq!(kms.kind(), KmsKind::Aws);
    assert_eq!(kms.key_id(), home_alias);
    let foreign = Arc::new(AwsKms::new(&moto_settings(FOREIGN), foreign_arn));
    kms_contract(kms, foreign).await;
}

#[tokio::test]
async fn local_kms_rejects_malformed_and_unknown_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let kms = local_kms(dir.path(), HOME);
    let context = tenant_key_context(&tenant(), &region(HOME), KeyPurpose::Data);
    let generated = kms.generate_data_key(&context).await.expect("generate");
    let variants = [
        WrappedKey {
            key_id: generated.wrapped.key_id.clone(),
            ciphertext: Vec::new(),
        },
        WrappedKey {
            key_id: generated.wrapped.key_id.clone(),
            ciphertext: generated.wrapped.ciphertext[..generated.wrapped.ciphertext.len() - 1]
                .to_vec(),
        },
        WrappedKey {
            key_id: "local:eu-central-1:0000000000000000".into(),
            ..generated.wrapped.clone()
        },
        WrappedKey {
            key_id: "local:eu-central-1:../../etc/passwd".into(),
            ..generated.wrapped.clone()
        },
        WrappedKey {
            key_id: "alias/other".into(),
            ..generated.wrapped.clone()
        },
    ];
    for wrapped in &variants {
        assert_eq!(
            kms.decrypt(wrapped, &context).await.expect_err("refused"),
            KmsError::Denied,
            "{wrapped:?}"
        );
    }
    let mut other_format = generated.wrapped.clone();
    other_format.ciphertext[0] = 9;
    assert_eq!(
        kms.decrypt(&other_format, &context)
            .await
            .expect_err("format"),
        KmsError::Denied
    );
}

#[tokio::test]
async fn local_master_key_rotation_rewraps_and_keeps_old_keys_readable() {
    let dir = tempfile::tempdir().expect("dir");
    let kms = local_kms(dir.path(), HOME);
    let context = tenant_key_context(&tenant(), &region(HOME), KeyPurpose::Data);
    let old_key_id = kms.key_id();
    let generated = kms.generate_data_key(&context).await.expect("generate");
    assert_eq!(generated.wrapped.key_id, old_key_id);

    let new_key_id = kms.rotate_master_key().expect("rotate");
    assert_ne!(new_key_id, old_key_id);
    assert_eq!(kms.key_id(), new_key_id);
    kms.check().await.expect("check after rotation");

    // Not yet rewrapped: still readable under the old master key.
    let material = kms
        .decrypt(&generated.wrapped, &context)
        .await
        .expect("old key still unwraps");
    assert_eq!(material.expose(), generated.material.expose());

    let rewrapped = kms
        .re_encrypt(&generated.wrapped, &context)
        .await
        .expect("rewrap");
    assert_eq!(
        rewrapped.key_id, new_key_id,
        "rewrapping moves the key to the new master"
    );
    let fresh = kms
        .generate_data_key(&context)
        .await
        .expect("generate after rotation");
    assert_eq!(fresh.wrapped.key_id, new_key_id);

    // A restart finds the new current key and every old one.
    drop(kms);
    let reopened = local_kms(dir.path(), HOME);
    assert_eq!(reopened.key_id(), new_key_id);
    for wrapped in [&generated.wrapped, &rewrapped] {
        let material = reopened
            .decrypt(wrapped, &context)
            .await
            .expect("unwrap after restart");
        assert_eq!(material.expose(), generated.material.expose());
    }
}

#[tokio::test]
async fn local_kms_check_fails_when_the_key_file_is_gone() {
    let dir = tempfile::tempdir().expect("dir");
    let kms = local_kms(dir.path(), HOME);
    let name = kms.key_id().rsplit(':').next().expect("name").to_owned();
    std::fs::remove_file(dir.path().join("keys").join(format!("{name}.key")))
        .expect("remove key file");
    assert!(matches!(kms.check().await, Err(KmsError::Unavailable(_))));
}

#[tokio::test]
async fn aws_kms_check_reports_a_disabled_key() {
    let (arn, _) = create_kms_key(HOME).await;
    let settings = moto_settings(HOME);
    // moto's DisableKey takes the bare key id only.
    let bare_id = arn.rsplit('/').next().expect("key id in ARN");
    kms_client(&settings)
        .disable_key()
        .key_id(bare_id)
        .send()
        .await
        .expect("disable key");
    let kms = AwsKms::new(&settings, arn.clone());
    match kms.check().await {
        Err(KmsError::KeyUnusable { key_id, state }) => {
            assert_eq!(key_id, arn);
            assert_eq!(state, "Disabled");
        }
        other => panic!("expected KeyUnusable, got {other:?}"),
    }
}

#[tokio::test]
async fn aws_kms_on_an_unknown_key_or_a_dead_endpoint_says_so() {
    let kms = AwsKms::new(&moto_settings(HOME), "alias/residency-no-such-key".into());
    assert!(
        matches!(kms.check().await, Err(KmsError::KeyUnusable { .. })),
        "{:?}",
        kms.check().await
    );

    let port = devstack::free_loopback_port().expect("free port");
    let settings = AwsSettings {
        region: region(HOME),
        endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        credentials: AwsCredentials::Static {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        },
    };
    let dead = AwsKms::new(&settings, "alias/any".into());
    let context = tenant_key_context(&tenant(), &region(HOME), KeyPurpose::Data);
    assert!(matches!(dead.check().await, Err(KmsError::Unavailable(_))));
    assert!(matches!(
        dead.generate_data_key(&context).await,
        Err(KmsError::Unavailable(_))
    ));
}

#[tokio::test]
async fn faulty_kms_fails_on_demand_then_recovers_and_counts() {
    let dir = tempfile::tempdir().expect("dir");
    let faulty = FaultyKms::new(local_kms(dir.path(), HOME));
    let context = tenant_key_context(&tenant(), &region(HOME), KeyPurpose::Data);

    faulty.fail_next(2, KmsError::Unavailable("injected".into()));
    for _ in 0..2 {
        let err = faulty
            .generate_data_key(&context)
            .await
            .expect_err("injected failure");
        assert_eq!(err, KmsError::Unavailable("injected".into()));
    }
    let generated = faulty.generate_data_key(&context).await.expect("recovers");
    assert_eq!(faulty.generate_calls(), 3);

    faulty.fail_next(1, KmsError::Denied);
    assert_eq!(
        faulty
            .decrypt(&generated.wrapped, &context)
            .await
            .expect_err("injected"),
        KmsError::Denied
    );
    let material = faulty
        .decrypt(&generated.wrapped, &context)
        .await
        .expect("decrypt");
    assert_eq!(material.expose(), generated.material.expose());
    faulty
        .re_encrypt(&generated.wrapped, &context)
        .await
        .expect("re_encrypt");
    faulty.check().await.expect("check");

    assert_eq!(faulty.decrypt_calls(), 2);
    assert_eq!(faulty.re_encrypt_calls(), 1);
    assert_eq!(faulty.check_calls(), 1);
    assert_eq!(faulty.calls(), 7);
    assert_eq!(faulty.kind(), KmsKind::Local);

    faulty.set_latency(Duration::from_millis(60));
    let started = Instant::now();
    faulty.check().await.expect("slow check");
    assert!(started.elapsed() >= Duration::from_millis(60));
}

#[tokio::test]
async fn faulty_kms_is_shareable_across_tasks() {
    let dir = tempfile::tempdir().expect("dir");
    let faulty = Arc::new(FaultyKms::new(local_kms(dir.path(), HOME)));
    faulty.fail_next(3, KmsError::Unavailable("injected".into()));
    let context = tenant_key_context(&tenant(), &region(HOME), KeyPurpose::Data);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (faulty, context) = (faulty.clone(), context.clone());
            tokio::spawn(async move { faulty.generate_data_key(&context).await.is_err() })
        })
        .collect();
    let mut failures = 0;
    for task in tasks {
        failures += usize::from(task.await.expect("task"));
    }
    assert_eq!(failures, 3, "exactly the injected number of calls fail");
    assert_eq!(faulty.calls(), 10);
}
