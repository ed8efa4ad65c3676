# Region compute module: provider requirements. The caller passes the region's provider;
# this module declares no provider block of its own.
terraform {
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60.0, < 6.0.0"
    }
  }
}
