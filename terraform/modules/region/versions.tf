# Region module: provider requirements. The caller passes the region's `aws` provider
# (one alias per region in the root); this module declares no provider block of its own.
terraform {
  # 1.9+: variable validations refer to other variables (replica vs jurisdiction).
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60.0, < 6.0.0"
    }
  }
}
