# Example environment: Terraform and provider requirements. State backend is left to the
# operator (e.g. an S3 backend with locking in the operations account); see
# docs/operations.md.
terraform {
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60.0, < 6.0.0"
    }
  }
}
