# Region module: everything one region of the catalogue owns (KMS key, data and audit
# buckets, RDS primary and replicas, IAM roles, secret containers). Every resource is
# created with the provider passed in, which must be the region's own: a module call
# wired to another region's provider fails in plan.

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  # AWS regions this platform knows, with the jurisdiction their data falls under. A
  # region missing here cannot be used: add it with its jurisdiction first.
  region_jurisdictions = {
    "eu-west-1"      = "EU"
    "eu-west-3"      = "EU"
    "eu-central-1"   = "EU"
    "eu-north-1"     = "EU"
    "eu-south-1"     = "EU"
    "eu-south-2"     = "EU"
    "eu-west-2"      = "UK"
    "eu-central-2"   = "CH"
    "us-east-1"      = "US"
    "us-east-2"      = "US"
    "us-west-1"      = "US"
    "us-west-2"      = "US"
    "ca-central-1"   = "CA"
    "ca-west-1"      = "CA"
    "ap-southeast-1" = "SG"
    "ap-southeast-2" = "AU"
    "ap-southeast-4" = "AU"
    "ap-northeast-1" = "JP"
    "ap-northeast-3" = "JP"
    "ap-south-1"     = "IN"
    "ap-south-2"     = "IN"
    "sa-east-1"      = "BR"
  }

  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id
  dns_suffix = data.aws_partition.current.dns_suffix
  name       = "${var.name_prefix}-${var.region}"

  tags = merge(var.tags, {
    "residency:region"       = var.region
    "residency:jurisdiction" = var.jurisdiction
  })

  data_bucket_arn      = "arn:${local.partition}:s3:::${var.data_bucket}"
  audit_bucket_arn     = "arn:${local.partition}:s3:::${var.audit_bucket}"
  analytics_bucket_arn = "arn:${local.partition}:s3:::${var.analytics.bucket}"

  # Secrets every node needs besides the catalogue's own references: the operator token
  # and the directory database URL are flags of `residency serve` read from these
  # environment variables.
  node_secret_env_names = setunion(var.secret_env_names, ["RESIDENCY_OPERATOR_TOKEN", "RESIDENCY_DIRECTORY_URL"])
}

# The module's own guard: the provider passed in is this region's.
resource "terraform_data" "region_guard" {
  input = var.region

  lifecycle {
    precondition {
      condition     = data.aws_region.current.name == var.region
      error_message = "The aws provider passed to this module is for another region than var.region: pass the region's own provider alias."
    }
  }
}
