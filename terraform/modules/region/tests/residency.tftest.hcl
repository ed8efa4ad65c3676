# Region module tests: residency rules, with a mock AWS provider (no account, no network).
# EU data is encrypted with the EU region's key; no replica outside the jurisdiction is
# accepted; the router role has no KMS, S3 or database permission; a module wired to
# another region's provider fails in plan.

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "111122223333"
      arn        = "arn:aws:iam::111122223333:user/operator"
    }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws", dns_suffix = "amazonaws.com" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:111122223333:key/0eu0west0one" }
  }
}

# The provider validates this ARN; the mock's random strings are not ARNs.
override_resource {
  target = aws_iam_role.rds_monitoring
  values = { arn = "arn:aws:iam::111122223333:role/residency-rds-monitoring" }
}

# RDS names hosts after the identifier and an account hash; the catalogue holds them.
override_resource {
  target = aws_db_instance.primary
  values = { address = "residency-eu-west-1.cxq4bm2h7tzk.eu-west-1.rds.amazonaws.com" }
}
override_resource {
  target = aws_db_instance.replica
  values = { address = "residency-eu-west-1-replica-1.cxq4bm2h7tzk.eu-west-1.rds.amazonaws.com" }
}

variables {
  region        = "eu-west-1"
  jurisdiction  = "EU"
  kms_key_alias = "alias/residency-eu-west-1"
  data_bucket   = "residency-eu-west-1-data"
  audit_bucket  = "residency-eu-west-1-audit"
  analytics     = { bucket = "residency-analytics", prefix = "eu-west-1/" }
  database = {
    primary = {
      identifier = "residency-eu-west-1"
      host       = "residency-eu-west-1.cxq4bm2h7tzk.eu-west-1.rds.amazonaws.com"
      port       = 5432
      database   = "residency"
      user       = "residency_api"
      region     = "eu-west-1"
    }
    replicas = [{
      identifier = "residency-eu-west-1-replica-1"
      host       = "residency-eu-west-1-replica-1.cxq4bm2h7tzk.eu-west-1.rds.amazonaws.com"
      port       = 5432
      region     = "eu-west-1"
    }]
  }
  secret_env_names    = ["RESIDENCY_AUDIT_SIGNING_KEY", "RESIDENCY_DB_PASSWORD", "RESIDENCY_FORWARDING_SECRET"]
  vpc_id              = "vpc-0eu"
  database_subnet_ids = ["subnet-0eua", "subnet-0eub"]
}

run "eu_data_is_encrypted_with_the_eu_key" {
  command = apply

  assert {
    condition     = strcontains(aws_kms_key.region.arn, ":eu-west-1:")
    error_message = "The region key is not an eu-west-1 key."
  }
  assert {
    condition     = aws_kms_key.region.enable_key_rotation && !aws_kms_key.region.multi_region
    error_message = "The region key must rotate and must not be multi-region."
  }
  assert {
    condition = alltrue([
      for config in [aws_s3_bucket_server_side_encryption_configuration.data, aws_s3_bucket_server_side_encryption_configuration.audit] :
      alltrue([for rule in config.rule :
        rule.bucket_key_enabled &&
        alltrue([for d in rule.apply_server_side_encryption_by_default :
      d.sse_algorithm == "aws:kms" && d.kms_master_key_id == aws_kms_key.region.arn])])
    ])
    error_message = "A bucket is not SSE-KMS with the region's key and bucket keys."
  }
  assert {
    condition = (
      aws_db_instance.primary[0].storage_encrypted &&
      aws_db_instance.primary[0].kms_key_id == aws_kms_key.region.arn &&
      aws_db_instance.primary[0].performance_insights_kms_key_id == aws_kms_key.region.arn &&
      aws_db_instance.primary[0].master_user_secret_kms_key_id == aws_kms_key.region.arn
    )
    error_message = "The primary's storage, insights and master secret must use the region key."
  }
  assert {
    condition     = alltrue([for r in aws_db_instance.replica : r.storage_encrypted && r.kms_key_id == aws_kms_key.region.arn])
    error_message = "Every replica must be encrypted with the region key."
  }
  assert {
    condition     = alltrue([for s in aws_secretsmanager_secret.node : s.kms_key_id == aws_kms_key.region.arn && length(s.replica) == 0])
    error_message = "Node secrets must use the region key and never be replicated."
  }
  assert {
    condition     = length(aws_secretsmanager_secret.node) == 5 && contains(keys(output.secret_arns), "RESIDENCY_OPERATOR_TOKEN")
    error_message = "One secret per catalogue reference plus the operator token and directory URL."
  }
}

run "database_backups_and_replicas_stay_in_the_region" {
  command = apply

  assert {
    condition = (
      aws_db_instance.primary[0].backup_retention_period >= 7 &&
      aws_db_instance.primary[0].deletion_protection &&
      !aws_db_instance.primary[0].publicly_accessible &&
      aws_db_instance.primary[0].iam_database_authentication_enabled
    )
    error_message = "The primary needs backups, deletion protection, no public access and IAM auth."
  }
  assert {
    condition     = length(aws_db_instance.replica) == 1 && alltrue([for r in aws_db_instance.replica : r.replicate_source_db == aws_db_instance.primary[0].identifier])
    error_message = "The replica must stream from the region's primary by identifier (same region)."
  }
  assert {
    condition = alltrue([
      for p in aws_db_parameter_group.region[0].parameter :
      p.value == "1" if contains(["rds.force_ssl", "hot_standby_feedback"], p.name)
    ])
    error_message = "The parameter group must force TLS and enable hot_standby_feedback."
  }
}

run "buckets_are_private_versioned_tls_only_and_never_replicated" {
  command = apply

  assert {
    condition = alltrue([for b in [aws_s3_bucket_public_access_block.data, aws_s3_bucket_public_access_block.audit] :
    b.block_public_acls && b.block_public_policy && b.ignore_public_acls && b.restrict_public_buckets])
    error_message = "Every public access path must be blocked."
  }
  assert {
    condition     = alltrue([for v in [aws_s3_bucket_versioning.data, aws_s3_bucket_versioning.audit] : v.versioning_configuration[0].status == "Enabled"])
    error_message = "Both buckets must be versioned."
  }
  assert {
    condition = alltrue([for p in [aws_s3_bucket_policy.data, aws_s3_bucket_policy.audit] : (
      contains([for s in jsondecode(p.policy).Statement : s.Sid if s.Effect == "Deny"], "DenyInsecureTransport") &&
      contains([for s in jsondecode(p.policy).Statement : s.Sid if s.Effect == "Deny"], "DenyReplication")
    )])
    error_message = "Both bucket policies must deny plain HTTP and replication."
  }
  assert {
    condition = (
      aws_s3_bucket.audit.object_lock_enabled &&
      aws_s3_bucket_object_lock_configuration.audit.rule[0].default_retention[0].mode == "COMPLIANCE" &&
      aws_s3_bucket_object_lock_configuration.audit.rule[0].default_retention[0].days >= 1
    )
    error_message = "The audit bucket needs Object Lock in compliance mode with a retention."
  }
}

run "key_policy_limits_use_to_the_regions_roles_and_context" {
  command = apply

  assert {
    condition = alltrue([
      for s in jsondecode(aws_kms_key.region.policy).Statement :
      s.Condition.StringEquals["kms:EncryptionContext:residency:region"] == "eu-west-1"
      if contains(["ApiTenantKeys", "ExportTenantKeys"], s.Sid)
    ])
    error_message = "Tenant key use must be bound to the region by encryption context."
  }
  assert {
    condition = length([
      for s in jsondecode(aws_kms_key.region.policy).Statement : s
      if contains(["ApiTenantKeys", "ExportTenantKeys"], s.Sid)
    ]) == 2
    error_message = "The key policy must grant tenant-key use to api and export only."
  }
  # The administrators manage the key but cannot use it for data outside a regional
  # service (RDS, Secrets Manager).
  assert {
    condition = alltrue([
      for s in jsondecode(aws_kms_key.region.policy).Statement :
      length(setintersection(toset(s.Action), ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"])) == 0
      if s.Sid == "Administer"
    ])
    error_message = "Key administrators must not be able to use the key directly."
  }
}

run "router_role_has_no_kms_s3_or_database_permission" {
  command = apply

  assert {
    condition     = !contains(keys(aws_iam_role_policy.task), "router")
    error_message = "The router role must have no inline policy."
  }
  assert {
    condition     = alltrue([for p in aws_iam_role_policy.task : p.role != aws_iam_role.task["router"].id])
    error_message = "No policy may be attached to the router role."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_kms_key.region.policy).Statement :
      !contains(flatten([try(s.Principal.AWS, [])]), aws_iam_role.task["router"].arn)
    ])
    error_message = "The region key policy must not name the router role."
  }
}

run "api_uses_the_region_key_only_and_the_data_bucket" {
  command = apply

  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.task["api"].policy).Statement :
      s.Resource == aws_kms_key.region.arn
      if anytrue([for a in flatten([s.Action]) : startswith(a, "kms:")])
    ])
    error_message = "The api may use the region's key only."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.task["api"].policy).Statement :
      startswith(s.Resource, "arn:aws:s3:::residency-eu-west-1-data")
      if anytrue([for a in flatten([s.Action]) : startswith(a, "s3:")]) && !startswith(s.Sid, "ErasureLedger") && !startswith(s.Sid, "AuditAnchor")
    ])
    error_message = "The api may reach the data bucket only, besides the erasure ledger and the anchored checkpoints."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.task["api"].policy).Statement :
      (s.Resource == "arn:aws:s3:::residency-eu-west-1-audit/erasures/*" &&
      length(setsubtract(toset(flatten([s.Action])), ["s3:PutObject", "s3:GetObject"])) == 0) ||
      (s.Resource == "arn:aws:s3:::residency-eu-west-1-audit" &&
        flatten([s.Action]) == ["s3:ListBucket"] &&
      try(s.Condition.StringLike["s3:prefix"], null) == ["erasures/*"])
      if startswith(s.Sid, "ErasureLedger")
    ])
    error_message = "The api may only write and read the erasure ledger's entries of the audit bucket, and list that prefix; never delete there."
  }
  assert {
    condition = length([
      for s in jsondecode(aws_iam_role_policy.task["api"].policy).Statement : s
      if startswith(s.Sid, "AuditAnchor")
      ]) == 2 && alltrue([
      for s in jsondecode(aws_iam_role_policy.task["api"].policy).Statement :
      (s.Resource == "arn:aws:s3:::residency-eu-west-1-audit/checkpoints/*" &&
      toset(flatten([s.Action])) == toset(["s3:PutObject", "s3:GetObject"])) ||
      (s.Resource == "arn:aws:s3:::residency-eu-west-1-audit" &&
        flatten([s.Action]) == ["s3:ListBucket"] &&
      try(s.Condition.StringLike["s3:prefix"], null) == ["checkpoints/*"])
      if startswith(s.Sid, "AuditAnchor")
    ])
    error_message = "The api may write, read and list the anchored checkpoints of the audit bucket (checkpoints/), and nothing more there; never delete."
  }
}

run "export_reaches_only_its_analytics_prefix" {
  command = apply

  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.task["export"].policy).Statement :
      s.Resource == "arn:aws:s3:::residency-analytics/eu-west-1/*" &&
      length(setsubtract(toset(flatten([s.Action])), ["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject", "s3:DeleteObject"])) == 0
      if anytrue([for a in flatten([s.Action]) : startswith(a, "s3:") && a != "s3:ListBucket"])
    ])
    error_message = "The export may only write, read and delete objects under its prefix of the analytics bucket."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.task["export"].policy).Statement :
      s.Resource == "arn:aws:s3:::residency-analytics" &&
      s.Condition.StringLike["s3:prefix"] == ["eu-west-1/*"]
      if contains(flatten([s.Action]), "s3:ListBucket")
    ])
    error_message = "The export may list its own prefix of the analytics bucket only."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.task["export"].policy).Statement :
      flatten([s.Action]) == ["kms:Decrypt"] && s.Resource == aws_kms_key.region.arn
      if s.Sid == "RegionKeyDecrypt"
    ])
    error_message = "The export may only decrypt with the region key."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.task["export"].policy).Statement :
      alltrue([for r in s.Resource : endswith(r, "/residency_export")])
      if s.Sid == "ReadOnlyDatabaseUser"
    ])
    error_message = "The export connects as the read-only export user only."
  }
}

run "a_replica_in_another_jurisdiction_is_rejected" {
  command = plan

  variables {
    database = {
      primary = {
        identifier = "residency-eu-west-1"
        host       = "residency-eu-west-1.cxq4bm2h7tzk.eu-west-1.rds.amazonaws.com"
        port       = 5432
        database   = "residency"
        user       = "residency_api"
        region     = "eu-west-1"
      }
      replicas = [{
        identifier = "residency-eu-west-1-replica-us"
        host       = "residency-eu-west-1-replica-us.c7nn1rfs0yqe.us-east-1.rds.amazonaws.com"
        port       = 5432
        region     = "us-east-1"
      }]
    }
  }

  expect_failures = [var.database]
}

run "a_replica_in_another_region_of_the_jurisdiction_is_rejected" {
  command = plan

  variables {
    database = {
      primary = {
        identifier = "residency-eu-west-1"
        host       = "residency-eu-west-1.cxq4bm2h7tzk.eu-west-1.rds.amazonaws.com"
        port       = 5432
        database   = "residency"
        user       = "residency_api"
        region     = "eu-west-1"
      }
      replicas = [{
        identifier = "residency-eu-west-1-replica-fra"
        host       = "residency-eu-west-1-replica-fra.c9akciq32ldn.eu-central-1.rds.amazonaws.com"
        port       = 5432
        region     = "eu-central-1"
      }]
    }
  }

  expect_failures = [var.database]
}

run "an_unknown_jurisdiction_is_rejected" {
  command = plan

  variables {
    jurisdiction = "XX"
  }

  expect_failures = [var.jurisdiction]
}

run "a_region_outside_its_catalogue_jurisdiction_is_rejected" {
  command = plan

  variables {
    jurisdiction = "US"
  }

  expect_failures = [var.jurisdiction]
}

run "database_hosts_that_disagree_with_the_catalogue_are_reported" {
  command = apply
  # A fresh state: the override applies to a newly created primary.
  state_key = "catalogue_mismatch"

  override_resource {
    target = aws_db_instance.primary
    values = { address = "residency-eu-west-1.c000000000.eu-west-1.rds.amazonaws.com" }
  }

  expect_failures = [check.catalogue_matches_database]
}

run "the_provider_of_another_region_is_rejected" {
  command = plan

  override_data {
    target = data.aws_region.current
    values = { name = "us-east-1" }
  }

  expect_failures = [terraform_data.region_guard]
}

run "a_singapore_region_keeps_its_own_key" {
  command   = apply
  state_key = "singapore"

  override_data {
    target = data.aws_region.current
    values = { name = "ap-southeast-1" }
  }
  override_resource {
    target = aws_kms_key.region
    values = { arn = "arn:aws:kms:ap-southeast-1:111122223333:key/0ap0southeast0one" }
  }
  override_resource {
    target = aws_db_instance.primary
    values = { address = "residency-ap-southeast-1.cw3kd8pm5vha.ap-southeast-1.rds.amazonaws.com" }
  }
  override_resource {
    target = aws_db_instance.replica
    values = { address = "residency-ap-southeast-1-replica-1.cw3kd8pm5vha.ap-southeast-1.rds.amazonaws.com" }
  }

  variables {
    region        = "ap-southeast-1"
    jurisdiction  = "SG"
    kms_key_alias = "alias/residency-ap-southeast-1"
    data_bucket   = "residency-ap-southeast-1-data"
    audit_bucket  = "residency-ap-southeast-1-audit"
    analytics     = { bucket = "residency-analytics", prefix = "ap-southeast-1/" }
    database = {
      primary = {
        identifier = "residency-ap-southeast-1"
        host       = "residency-ap-southeast-1.cw3kd8pm5vha.ap-southeast-1.rds.amazonaws.com"
        port       = 5432
        database   = "residency"
        user       = "residency_api"
        region     = "ap-southeast-1"
      }
      replicas = [{
        identifier = "residency-ap-southeast-1-replica-1"
        host       = "residency-ap-southeast-1-replica-1.cw3kd8pm5vha.ap-southeast-1.rds.amazonaws.com"
        port       = 5432
        region     = "ap-southeast-1"
      }]
    }
  }

  assert {
    condition     = aws_db_instance.primary[0].kms_key_id == aws_kms_key.region.arn && strcontains(aws_kms_key.region.arn, ":ap-southeast-1:")
    error_message = "Singapore data must be encrypted with the Singapore key."
  }
  assert {
    condition     = alltrue([for name, arn in output.role_arns : true]) && aws_iam_role.task["api"].name == "residency-ap-southeast-1-api"
    error_message = "Role names carry the region."
  }
}
