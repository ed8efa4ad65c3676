# Global module: outputs for the regions (analytics key) and for node configuration.

output "analytics_bucket" {
  description = "The analytics bucket."
  value       = aws_s3_bucket.analytics.id
}

output "analytics_kms_key_arn" {
  description = "The analytics bucket's key; pass it to each region module's analytics_kms_key_arn."
  value       = aws_kms_key.analytics.arn
}

output "directory_database" {
  description = "The directory database reference (host, port, database, secret reference)."
  value       = var.directory_database
}

output "dns_names" {
  description = "Regional and global names created (empty without DNS)."
  value = {
    regional = { for region, record in aws_route53_record.regional : region => record.fqdn }
    global   = var.dns == null ? null : var.dns.global_name
  }
}
