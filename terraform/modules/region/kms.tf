# Region module: the region's KMS key. Rotation on; its key policy lets administrators
# manage it without using it, and lets only this region's roles use it, with the
# encryption context bound to this region (tenant keys) or to this region's buckets
# (S3 SSE-KMS). No multi-region key: key material never leaves the region.

locals {
  key_admins = length(var.key_admin_arns) > 0 ? var.key_admin_arns : ["arn:${local.partition}:iam::${local.account_id}:root"]
}

locals {
  # Plain JSON (not a policy-document data source) so that tests with mock providers
  # can read the statements back.
  key_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "Administer"
        Effect    = "Allow"
        Principal = { AWS = local.key_admins }
        Resource  = "*"
        Action = [
          "kms:CancelKeyDeletion",
          "kms:CreateAlias",
          "kms:DeleteAlias",
          "kms:DescribeKey",
          "kms:DisableKeyRotation",
          "kms:EnableKeyRotation",
          "kms:GetKeyPolicy",
          "kms:GetKeyRotationStatus",
          "kms:ListAliases",
          "kms:ListGrants",
          "kms:ListKeyPolicies",
          "kms:ListResourceTags",
          "kms:PutKeyPolicy",
          "kms:RevokeGrant",
          "kms:RotateKeyOnDemand",
          "kms:ScheduleKeyDeletion",
          "kms:TagResource",
          "kms:UntagResource",
          "kms:UpdateAlias",
          "kms:UpdateKeyDescription",
        ]
      },
      # Tenant data keys: the api wraps and unwraps them; the encryption context names
      # the region (crates/envelope: `residency:region`), so a key wrapped here cannot be
      # presented as another region's.
      {
        Sid       = "ApiTenantKeys"
        Effect    = "Allow"
        Principal = { AWS = aws_iam_role.task["api"].arn }
        Resource  = "*"
        Action    = ["kms:GenerateDataKey", "kms:Decrypt"]
        Condition = { StringEquals = { "kms:EncryptionContext:residency:region" = var.region } }
      },
      {
        Sid       = "ExportTenantKeys"
        Effect    = "Allow"
        Principal = { AWS = aws_iam_role.task["export"].arn }
        Resource  = "*"
        Action    = ["kms:Decrypt"]
        Condition = { StringEquals = { "kms:EncryptionContext:residency:region" = var.region } }
      },
      # The data bucket's default encryption: S3 calls KMS on the api's behalf with the
      # bucket as encryption context (bucket keys on).
      {
        Sid       = "ApiDataBucketThroughS3"
        Effect    = "Allow"
        Principal = { AWS = aws_iam_role.task["api"].arn }
        Resource  = "*"
        Action    = ["kms:GenerateDataKey", "kms:Decrypt"]
        Condition = {
          StringEquals = { "kms:ViaService" = "s3.${var.region}.${local.dns_suffix}" }
          ArnLike      = { "kms:EncryptionContext:aws:s3:arn" = [local.data_bucket_arn, "${local.data_bucket_arn}/*"] }
        }
      },
      # RDS storage, Performance Insights, the RDS-managed master secret and Secrets
      # Manager: the services use the key for the administrators who create those
      # resources, in this region only.
      {
        Sid       = "RegionalServices"
        Effect    = "Allow"
        Principal = { AWS = local.key_admins }
        Resource  = "*"
        Action = [
          "kms:CreateGrant",
          "kms:Decrypt",
          "kms:DescribeKey",
          "kms:Encrypt",
          "kms:GenerateDataKey*",
          "kms:ReEncrypt*",
        ]
        Condition = {
          StringEquals = {
            "kms:ViaService" = [
              "rds.${var.region}.${local.dns_suffix}",
              "secretsmanager.${var.region}.${local.dns_suffix}",
            ]
          }
        }
      },
      # Node secrets (Secrets Manager, encrypted with this key): the region's ECS task
      # execution role reads them; the encryption context is the secret's ARN.
      {
        Sid       = "NodeSecrets"
        Effect    = "Allow"
        Principal = { AWS = aws_iam_role.task["execution"].arn }
        Resource  = "*"
        Action    = ["kms:Decrypt"]
        Condition = {
          StringEquals = { "kms:ViaService" = "secretsmanager.${var.region}.${local.dns_suffix}" }
          StringLike   = { "kms:EncryptionContext:SecretARN" = "arn:${local.partition}:secretsmanager:${var.region}:${local.account_id}:secret:${var.name_prefix}/${var.region}/*" }
        }
      },
      # CloudWatch Logs of this region's nodes.
      {
        Sid       = "RegionalLogs"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.${local.dns_suffix}" }
        Resource  = "*"
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Condition = {
          ArnLike = { "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/${var.name_prefix}/${var.region}/*" }
        }
      },
    ]
  }
}

resource "aws_kms_key" "region" {
  description             = "Residency ${var.region} (${var.jurisdiction}): tenant data keys, buckets, database"
  key_usage               = "ENCRYPT_DECRYPT"
  enable_key_rotation     = true
  multi_region            = false
  deletion_window_in_days = var.key_deletion_window_days
  policy                  = jsonencode(local.key_policy)
  tags                    = local.tags

  depends_on = [terraform_data.region_guard]
}

resource "aws_kms_alias" "region" {
  name          = var.kms_key_alias
  target_key_id = aws_kms_key.region.key_id
}
