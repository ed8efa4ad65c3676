# Example environment: one provider alias per catalogue region (Terraform needs them
# static; a catalogue test checks that every region of regions/ has one), plus the alias
# hosting the global pieces. Adding a region: add its alias here and its module calls in
# main.tf (docs/operations.md).

locals {
  default_tags = { "residency:managed-by" = "terraform", "residency:environment" = var.environment }
}

provider "aws" {
  alias  = "ap_southeast_1"
  region = "ap-southeast-1"
  default_tags {
    tags = local.default_tags
  }
}

provider "aws" {
  alias  = "eu_central_1"
  region = "eu-central-1"
  default_tags {
    tags = local.default_tags
  }
}

provider "aws" {
  alias  = "eu_west_1"
  region = "eu-west-1"
  default_tags {
    tags = local.default_tags
  }
}

provider "aws" {
  alias  = "us_east_1"
  region = "us-east-1"
  default_tags {
    tags = local.default_tags
  }
}

# Where the analytics bucket and its key live (anonymized data only).
provider "aws" {
  alias  = "global"
  region = var.global_region
  default_tags {
    tags = local.default_tags
  }
}
