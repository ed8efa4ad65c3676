# Region module: the region's IAM roles, least privilege.
#   api:       KMS GenerateDataKey/Decrypt on the region key only; the data bucket; the
#              erasure ledger's prefix of the audit bucket (write and read, no delete).
#   router:    nothing: no KMS, no S3, no database. It forwards by method, path, headers.
#   export:    KMS Decrypt on the region key; IAM database auth as the read-only export
#              user on the replicas; its own prefix of the analytics bucket.
#   execution: ECS task execution: pull the image, write logs, read the region's node
#              secrets.
# Role names carry the region: IAM is global, the roles are not. Policies are plain JSON
# (jsonencode) so that tests with mock providers can read them back.

locals {
  ecs_tasks_trust = {
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "ecs-tasks.${local.dns_suffix}" }
      Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
    }]
  }

  api_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "RegionKey"
        Effect   = "Allow"
        Action   = ["kms:GenerateDataKey", "kms:Decrypt"]
        Resource = aws_kms_key.region.arn
      },
      {
        Sid    = "DataObjects"
        Effect = "Allow"
        # Every version of a deleted file goes (erasure, offboarding purge).
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"]
        Resource = "${local.data_bucket_arn}/*"
      },
      {
        Sid      = "DataBucket"
        Effect   = "Allow"
        Action   = ["s3:ListBucket", "s3:ListBucketVersions"]
        Resource = local.data_bucket_arn
      },
      # The erasure ledger (docs/privacy.md): one write-once entry per erasure under
      # `erasures/` of the audit bucket, listed and read back at start after a restore.
      # No delete: Object Lock keeps each entry for the retention anyway.
      {
        Sid      = "ErasureLedgerEntries"
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:GetObject"]
        Resource = "${local.audit_bucket_arn}/erasures/*"
      },
      {
        Sid       = "ErasureLedgerListing"
        Effect    = "Allow"
        Action    = "s3:ListBucket"
        Resource  = local.audit_bucket_arn
        Condition = { StringLike = { "s3:prefix" = ["erasures/*"] } }
      },
      # Anchored checkpoints (docs/audit.md, "Anchors"): one write-once object per signed
      # checkpoint under `checkpoints/` of the audit bucket; the node lists and reads one
      # back only to never write it twice. No delete: Object Lock keeps each anchor for the
      # retention, beyond the reach of whoever can write the database.
      {
        Sid      = "AuditAnchorObjects"
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:GetObject"]
        Resource = "${local.audit_bucket_arn}/checkpoints/*"
      },
      {
        Sid       = "AuditAnchorListing"
        Effect    = "Allow"
        Action    = "s3:ListBucket"
        Resource  = local.audit_bucket_arn
        Condition = { StringLike = { "s3:prefix" = ["checkpoints/*"] } }
      },
    ]
  }

  export_policy = {
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Sid      = "RegionKeyDecrypt"
          Effect   = "Allow"
          Action   = "kms:Decrypt"
          Resource = aws_kms_key.region.arn
        },
        # Its own prefix only: releases are written there, and an incremental, idempotent
        # release reads the manifests it wrote, deletes the parts of a run it abandoned or
        # withdrew (after a subject's erasure), and lists what is there.
        {
          Sid      = "AnalyticsOwnPrefixObjects"
          Effect   = "Allow"
          Action   = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject", "s3:DeleteObject"]
          Resource = "${local.analytics_bucket_arn}/${var.analytics.prefix}*"
        },
        {
          Sid       = "AnalyticsListOwnPrefix"
          Effect    = "Allow"
          Action    = "s3:ListBucket"
          Resource  = local.analytics_bucket_arn
          Condition = { StringLike = { "s3:prefix" = ["${var.analytics.prefix}*"] } }
        },
      ],
      # The export reads replicas only, as its own read-only database user.
      var.enable_database ? [{
        Sid    = "ReadOnlyDatabaseUser"
        Effect = "Allow"
        Action = "rds-db:connect"
        Resource = [
          for replica in aws_db_instance.replica :
          "arn:${local.partition}:rds-db:${var.region}:${local.account_id}:dbuser:${replica.resource_id}/${var.export_db_user}"
        ]
      }] : [],
      # SSE-KMS of the analytics bucket: S3 asks the analytics key on the export's behalf.
      var.analytics_kms_key_arn == null ? [] : [{
        Sid       = "AnalyticsKeyThroughS3"
        Effect    = "Allow"
        Action    = ["kms:GenerateDataKey", "kms:Decrypt"]
        Resource  = var.analytics_kms_key_arn
        Condition = { StringLike = { "kms:ViaService" = "s3.*.${local.dns_suffix}" } }
      }],
    )
  }

  execution_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "RegistryLogin"
        Effect   = "Allow"
        Action   = "ecr:GetAuthorizationToken"
        Resource = "*"
      },
      {
        Sid      = "PullImage"
        Effect   = "Allow"
        Action   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
        Resource = "arn:${local.partition}:ecr:${var.region}:${local.account_id}:repository/${var.image_repository}"
      },
      {
        Sid      = "Logs"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/${var.name_prefix}/${var.region}/*"
      },
      {
        Sid      = "NodeSecrets"
        Effect   = "Allow"
        Action   = "secretsmanager:GetSecretValue"
        Resource = [for secret in aws_secretsmanager_secret.node : secret.arn]
      },
      {
        Sid       = "NodeSecretsKey"
        Effect    = "Allow"
        Action    = "kms:Decrypt"
        Resource  = aws_kms_key.region.arn
        Condition = { StringEquals = { "kms:ViaService" = "secretsmanager.${var.region}.${local.dns_suffix}" } }
      },
    ]
  }
}

locals {
  # Every role of the region, and the inline policy of each. The router has no policy:
  # tests assert that no policy, key policy or bucket policy ever names it.
  task_roles = {
    api       = "the regional node (API and service)"
    router    = "the router; holds no permission on tenant data"
    export    = "the anonymized analytics export"
    execution = "ECS task execution (image, logs, node secrets)"
  }
  task_policies = {
    api       = local.api_policy
    export    = local.export_policy
    execution = local.execution_policy
  }
}

resource "aws_iam_role" "task" {
  for_each = local.task_roles

  name                 = "${local.name}-${each.key}"
  description          = "Residency ${var.region}: ${each.value}"
  assume_role_policy   = jsonencode(local.ecs_tasks_trust)
  max_session_duration = 3600
  tags                 = merge(local.tags, { "residency:role" = each.key })
}

resource "aws_iam_role_policy" "task" {
  for_each = local.task_policies

  name   = "${local.name}-${each.key}"
  role   = aws_iam_role.task[each.key].id
  policy = jsonencode(each.value)
}
