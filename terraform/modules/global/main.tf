# Global module: the analytics bucket (anonymized exports only, SSE-KMS with its own
# key, private, TLS-only, each region's export role confined to its own prefix), optional
# DNS records for the regional endpoints, and the directory database reference.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  partition            = data.aws_partition.current.partition
  dns_suffix           = data.aws_partition.current.dns_suffix
  account_id           = data.aws_caller_identity.current.account_id
  analytics_bucket_arn = "arn:${local.partition}:s3:::${var.analytics_bucket}"
  key_admins           = length(var.key_admin_arns) > 0 ? var.key_admin_arns : ["arn:${local.partition}:iam::${local.account_id}:root"]
  tags                 = merge(var.tags, { "residency:scope" = "global" })

  analytics_key_policy = {
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Sid       = "Administer"
          Effect    = "Allow"
          Principal = { AWS = local.key_admins }
          Resource  = "*"
          Action = [
            "kms:CancelKeyDeletion", "kms:CreateAlias", "kms:DeleteAlias", "kms:DescribeKey",
            "kms:DisableKeyRotation", "kms:EnableKeyRotation", "kms:GetKeyPolicy",
            "kms:GetKeyRotationStatus", "kms:ListAliases", "kms:ListGrants", "kms:ListKeyPolicies",
            "kms:ListResourceTags", "kms:PutKeyPolicy", "kms:RevokeGrant", "kms:ScheduleKeyDeletion",
            "kms:TagResource", "kms:UntagResource", "kms:UpdateAlias", "kms:UpdateKeyDescription",
          ]
        },
        {
          Sid       = "ExportersThroughS3"
          Effect    = "Allow"
          Principal = { AWS = [for e in values(var.exporters) : e.export_role_arn] }
          Resource  = "*"
          Action    = ["kms:GenerateDataKey", "kms:Decrypt"]
          Condition = {
            StringEquals = { "kms:ViaService" = "s3.${data.aws_region.current.name}.${local.dns_suffix}" }
            ArnLike      = { "kms:EncryptionContext:aws:s3:arn" = [local.analytics_bucket_arn, "${local.analytics_bucket_arn}/*"] }
          }
        },
      ],
      length(var.analytics_reader_arns) == 0 ? [] : [{
        Sid       = "ReadersThroughS3"
        Effect    = "Allow"
        Principal = { AWS = var.analytics_reader_arns }
        Resource  = "*"
        Action    = "kms:Decrypt"
        Condition = {
          StringEquals = { "kms:ViaService" = "s3.${data.aws_region.current.name}.${local.dns_suffix}" }
        }
      }],
    )
  }

  analytics_bucket_policy = {
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Sid       = "DenyInsecureTransport"
          Effect    = "Deny"
          Principal = "*"
          Action    = "s3:*"
          Resource  = [local.analytics_bucket_arn, "${local.analytics_bucket_arn}/*"]
          Condition = { Bool = { "aws:SecureTransport" = "false" } }
        },
      ],
      # A region's export role may not write, read or delete outside its own prefix,
      # whatever its IAM policy says.
      [for region, e in var.exporters : {
        Sid       = "ConfineExport${replace(title(replace(region, "-", " ")), " ", "")}"
        Effect    = "Deny"
        Principal = { AWS = e.export_role_arn }
        Action    = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject", "s3:DeleteObject"]
        NotResource = [
          "${local.analytics_bucket_arn}/${e.prefix}*",
        ]
      }],
    )
  }
}

resource "aws_kms_key" "analytics" {
  description             = "Residency analytics bucket (anonymized exports)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = jsonencode(local.analytics_key_policy)
  tags                    = local.tags
}

resource "aws_kms_alias" "analytics" {
  name          = "alias/${var.name_prefix}-analytics"
  target_key_id = aws_kms_key.analytics.key_id
}

resource "aws_s3_bucket" "analytics" {
  #checkov:skip=CKV_AWS_144:the analytics bucket is the single global copy; replicating it is not needed and would add a second location to audit
  #checkov:skip=CKV_AWS_18:readers are IAM principals recorded by CloudTrail; server access logs can only be written SSE-S3
  #checkov:skip=CKV2_AWS_62:consumers poll the manifests the export writes; no event consumer exists
  bucket        = var.analytics_bucket
  force_destroy = var.ephemeral
  tags          = merge(local.tags, { "residency:purpose" = "anonymized-analytics" })
}

resource "aws_s3_bucket_ownership_controls" "analytics" {
  bucket = aws_s3_bucket.analytics.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "analytics" {
  bucket                  = aws_s3_bucket.analytics.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "analytics" {
  bucket = aws_s3_bucket.analytics.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "analytics" {
  bucket = aws_s3_bucket.analytics.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.analytics.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "analytics" {
  bucket = aws_s3_bucket.analytics.id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {
      prefix = ""
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {
      prefix = ""
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
  }

  depends_on = [aws_s3_bucket_versioning.analytics]
}

resource "aws_s3_bucket_policy" "analytics" {
  bucket = aws_s3_bucket.analytics.id
  policy = jsonencode(local.analytics_bucket_policy)

  depends_on = [aws_s3_bucket_public_access_block.analytics]
}
