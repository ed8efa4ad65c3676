# Moto environment: the S3, KMS, IAM and Secrets Manager parts of two catalogue regions
# of different jurisdictions (eu-west-1, us-east-1) and the global analytics bucket,
# applied and destroyed against a local moto_server by `cargo xtask terraform`. The
# region inputs are the committed regions.auto.tfvars.json, so the generated catalogue
# values are what gets applied. RDS and compute are off here (moto does not emulate
# them faithfully); the example environment's mock-provider tests cover them.

terraform {
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60.0, < 6.0.0"
    }
  }
}

variable "moto_endpoint" {
  description = "Base URL of the moto_server started for the run, e.g. http://127.0.0.1:5123."
  type        = string

  validation {
    condition     = can(regex("^http://127\\.0\\.0\\.1:[0-9]+$", var.moto_endpoint))
    error_message = "The moto endpoint must be a loopback URL: this root must never reach a real account."
  }
}

locals {
  catalogue = jsondecode(file("${path.module}/../example/regions.auto.tfvars.json")).regions
  regions   = { for id in ["eu-west-1", "us-east-1"] : id => local.catalogue[id] }
}

provider "aws" {
  alias                       = "eu_west_1"
  region                      = "eu-west-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  endpoints {
    iam            = var.moto_endpoint
    kms            = var.moto_endpoint
    s3             = var.moto_endpoint
    secretsmanager = var.moto_endpoint
    sts            = var.moto_endpoint
  }
}

provider "aws" {
  alias                       = "us_east_1"
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  endpoints {
    iam            = var.moto_endpoint
    kms            = var.moto_endpoint
    s3             = var.moto_endpoint
    secretsmanager = var.moto_endpoint
    sts            = var.moto_endpoint
  }
}

module "global" {
  source    = "../../modules/global"
  providers = { aws = aws.eu_west_1 }

  analytics_bucket = local.regions["eu-west-1"].analytics.bucket
  exporters = {
    "eu-west-1" = { prefix = local.regions["eu-west-1"].analytics.prefix, export_role_arn = module.region_eu_west_1.role_arns.export }
    "us-east-1" = { prefix = local.regions["us-east-1"].analytics.prefix, export_role_arn = module.region_us_east_1.role_arns.export }
  }
  ephemeral = true
}

module "region_eu_west_1" {
  source    = "../../modules/region"
  providers = { aws = aws.eu_west_1 }

  region                = "eu-west-1"
  jurisdiction          = local.regions["eu-west-1"].jurisdiction
  kms_key_alias         = local.regions["eu-west-1"].kms_key_alias
  data_bucket           = local.regions["eu-west-1"].data_bucket
  audit_bucket          = local.regions["eu-west-1"].audit_bucket
  analytics             = local.regions["eu-west-1"].analytics
  analytics_kms_key_arn = module.global.analytics_kms_key_arn
  database              = local.regions["eu-west-1"].database
  secret_env_names      = local.regions["eu-west-1"].secret_env_names
  enable_database       = false
  ephemeral             = true
}

module "region_us_east_1" {
  source    = "../../modules/region"
  providers = { aws = aws.us_east_1 }

  region                = "us-east-1"
  jurisdiction          = local.regions["us-east-1"].jurisdiction
  kms_key_alias         = local.regions["us-east-1"].kms_key_alias
  data_bucket           = local.regions["us-east-1"].data_bucket
  audit_bucket          = local.regions["us-east-1"].audit_bucket
  analytics             = local.regions["us-east-1"].analytics
  analytics_kms_key_arn = module.global.analytics_kms_key_arn
  database              = local.regions["us-east-1"].database
  secret_env_names      = local.regions["us-east-1"].secret_env_names
  enable_database       = false
  ephemeral             = true
}

output "regions" {
  description = "What was applied, by region: key ARN, buckets, roles."
  value = {
    "eu-west-1" = {
      kms_key_arn  = module.region_eu_west_1.kms_key_arn
      data_bucket  = module.region_eu_west_1.data_bucket
      audit_bucket = module.region_eu_west_1.audit_bucket
      role_arns    = module.region_eu_west_1.role_arns
    }
    "us-east-1" = {
      kms_key_arn  = module.region_us_east_1.kms_key_arn
      data_bucket  = module.region_us_east_1.data_bucket
      audit_bucket = module.region_us_east_1.audit_bucket
      role_arns    = module.region_us_east_1.role_arns
    }
  }
}
