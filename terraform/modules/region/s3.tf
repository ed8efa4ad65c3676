# Region module: the data bucket (envelope-encrypted tenant files) and the audit bucket
# (write-once audit exports). Both: SSE-KMS with the region's key and bucket keys,
# versioning, every public access path blocked, TLS-only, and a bucket policy that denies
# replication configuration to everyone: objects never leave the region.

locals {
  buckets = {
    data  = { name = var.data_bucket, arn = local.data_bucket_arn }
    audit = { name = var.audit_bucket, arn = local.audit_bucket_arn }
  }
}

resource "aws_s3_bucket" "data" {
  #checkov:skip=CKV_AWS_144:cross-region replication is forbidden by residency; the bucket policy denies PutReplicationConfiguration
  #checkov:skip=CKV_AWS_18:access is recorded by the application's hash-chained audit log; server access logs can only be written SSE-S3, outside the region's key
  #checkov:skip=CKV2_AWS_62:no consumer of object events: the node reads and writes its objects itself
  bucket        = var.data_bucket
  force_destroy = var.ephemeral
  tags          = merge(local.tags, { "residency:purpose" = "tenant-data" })

  depends_on = [terraform_data.region_guard]
}

resource "aws_s3_bucket" "audit" {
  #checkov:skip=CKV_AWS_144:cross-region replication is forbidden by residency; the bucket policy denies PutReplicationConfiguration
  #checkov:skip=CKV_AWS_18:the bucket holds the audit exports themselves (Object Lock); server access logs can only be written SSE-S3, outside the region's key
  #checkov:skip=CKV2_AWS_62:no consumer of object events: audit exports are fetched on demand by compliance officers
  bucket              = var.audit_bucket
  object_lock_enabled = true
  force_destroy       = var.ephemeral
  tags                = merge(local.tags, { "residency:purpose" = "audit" })

  depends_on = [terraform_data.region_guard]
}

# Data bucket.

resource "aws_s3_bucket_ownership_controls" "data" {
  bucket = aws_s3_bucket.data.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.region.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_policy" "data" {
  bucket = aws_s3_bucket.data.id
  policy = jsonencode(local.bucket_policies["data"])

  depends_on = [aws_s3_bucket_public_access_block.data]
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket = aws_s3_bucket.data.id

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

  # Overwritten or deleted tenant files are kept a while for recovery, then gone, so
  # that crypto-shredding and erasure are not undone by old versions forever.
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

  depends_on = [aws_s3_bucket_versioning.data]
}

# Audit bucket: the same protections, and Object Lock instead of version expiry.

resource "aws_s3_bucket_ownership_controls" "audit" {
  bucket = aws_s3_bucket.audit.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "audit" {
  bucket                  = aws_s3_bucket.audit.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "audit" {
  bucket = aws_s3_bucket.audit.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.region.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_policy" "audit" {
  bucket = aws_s3_bucket.audit.id
  policy = jsonencode(local.bucket_policies["audit"])

  depends_on = [aws_s3_bucket_public_access_block.audit]
}

resource "aws_s3_bucket_lifecycle_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id

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

  depends_on = [aws_s3_bucket_versioning.audit]
}

resource "aws_s3_bucket_object_lock_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id

  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.audit_retention_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.audit]
}

# Bucket policies.

locals {
  bucket_policies = {
    for key, bucket in local.buckets : key => {
      Version = "2012-10-17"
      Statement = [
        {
          Sid       = "DenyInsecureTransport"
          Effect    = "Deny"
          Principal = "*"
          Action    = "s3:*"
          Resource  = [bucket.arn, "${bucket.arn}/*"]
          Condition = { Bool = { "aws:SecureTransport" = "false" } }
        },
        # Residency: nobody, Terraform included, may set up replication out of the bucket.
        {
          Sid       = "DenyReplication"
          Effect    = "Deny"
          Principal = "*"
          Action    = ["s3:PutReplicationConfiguration", "s3:ReplicateObject"]
          Resource  = [bucket.arn, "${bucket.arn}/*"]
        },
        # Objects are encrypted with this region's key only.
        {
          Sid       = "DenyOtherKeys"
          Effect    = "Deny"
          Principal = "*"
          Action    = "s3:PutObject"
          Resource  = "${bucket.arn}/*"
          Condition = {
            StringNotEqualsIfExists = { "s3:x-amz-server-side-encryption-aws-kms-key-id" = aws_kms_key.region.arn }
          }
        },
      ]
    }
  }
}
