# Global module: provider requirements. The caller passes the provider of the region that
# hosts the global pieces (analytics bucket, DNS); this module declares no provider block.
terraform {
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60.0, < 6.0.0"
    }
  }
}
