# Region module: outputs, which are what a regional node's configuration needs (the
# catalogue entry, the environment of `residency serve`, the roles its tasks assume).

output "region" {
  description = "The region id."
  value       = var.region
}

output "jurisdiction" {
  description = "The region's jurisdiction."
  value       = var.jurisdiction
}

output "kms_key_arn" {
  description = "ARN of the region's KMS key."
  value       = aws_kms_key.region.arn
}

output "kms_key_alias" {
  description = "The key's alias, as the catalogue names it (`kms.key`)."
  value       = aws_kms_alias.region.name
}

output "data_bucket" {
  description = "The data bucket (`storage.data_bucket`)."
  value       = aws_s3_bucket.data.bucket
}

output "audit_bucket" {
  description = "The audit bucket (`storage.audit_bucket`)."
  value       = aws_s3_bucket.audit.bucket
}

output "role_arns" {
  description = "IAM roles of the region's tasks: api (the node), router, export, execution (ECS task execution)."
  value = {
    api       = aws_iam_role.task["api"].arn
    router    = aws_iam_role.task["router"].arn
    export    = aws_iam_role.task["export"].arn
    execution = aws_iam_role.task["execution"].arn
  }
}

output "secret_arns" {
  description = "Secrets Manager secrets of the node, keyed by the environment variable they fill."
  value       = { for name, secret in aws_secretsmanager_secret.node : name => secret.arn }
}

output "database_endpoints" {
  description = "Hosts of the primary and replicas as RDS created them (what the catalogue's `database` must say). Null without a database."
  value = var.enable_database ? {
    primary  = { host = aws_db_instance.primary[0].address, port = aws_db_instance.primary[0].port }
    replicas = [for id, replica in aws_db_instance.replica : { identifier = id, host = replica.address, port = replica.port }]
  } : null
}

output "database_client_security_group_id" {
  description = "Security group whose members may connect to the region database (node and export tasks). Null without a database."
  value       = var.enable_database ? aws_security_group.database_client[0].id : null
}

output "node_environment" {
  description = "Plain (non-secret) environment of `residency serve` in this region."
  value = {
    RESIDENCY_REGION  = var.region
    RESIDENCY_CATALOG = "/etc/residency/regions"
    RESIDENCY_LISTEN  = "0.0.0.0:8080"
  }
}
