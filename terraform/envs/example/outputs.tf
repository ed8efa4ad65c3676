# Example environment: what each regional node's configuration needs, by region: the
# catalogue's values as AWS created them, the roles, and the secrets to fill.

output "node_configuration" {
  description = "Per region: key, buckets, database endpoints, roles, secrets to fill, load balancer."
  value = {
    "ap-southeast-1" = {
      kms_key_arn        = module.region_ap_southeast_1.kms_key_arn
      kms_key_alias      = module.region_ap_southeast_1.kms_key_alias
      data_bucket        = module.region_ap_southeast_1.data_bucket
      audit_bucket       = module.region_ap_southeast_1.audit_bucket
      database_endpoints = module.region_ap_southeast_1.database_endpoints
      role_arns          = module.region_ap_southeast_1.role_arns
      secret_arns        = module.region_ap_southeast_1.secret_arns
      alb_dns_name       = module.compute_ap_southeast_1.alb_dns_name
    }
    "eu-central-1" = {
      kms_key_arn        = module.region_eu_central_1.kms_key_arn
      kms_key_alias      = module.region_eu_central_1.kms_key_alias
      data_bucket        = module.region_eu_central_1.data_bucket
      audit_bucket       = module.region_eu_central_1.audit_bucket
      database_endpoints = module.region_eu_central_1.database_endpoints
      role_arns          = module.region_eu_central_1.role_arns
      secret_arns        = module.region_eu_central_1.secret_arns
      alb_dns_name       = module.compute_eu_central_1.alb_dns_name
    }
    "eu-west-1" = {
      kms_key_arn        = module.region_eu_west_1.kms_key_arn
      kms_key_alias      = module.region_eu_west_1.kms_key_alias
      data_bucket        = module.region_eu_west_1.data_bucket
      audit_bucket       = module.region_eu_west_1.audit_bucket
      database_endpoints = module.region_eu_west_1.database_endpoints
      role_arns          = module.region_eu_west_1.role_arns
      secret_arns        = module.region_eu_west_1.secret_arns
      alb_dns_name       = module.compute_eu_west_1.alb_dns_name
    }
    "us-east-1" = {
      kms_key_arn        = module.region_us_east_1.kms_key_arn
      kms_key_alias      = module.region_us_east_1.kms_key_alias
      data_bucket        = module.region_us_east_1.data_bucket
      audit_bucket       = module.region_us_east_1.audit_bucket
      database_endpoints = module.region_us_east_1.database_endpoints
      role_arns          = module.region_us_east_1.role_arns
      secret_arns        = module.region_us_east_1.secret_arns
      alb_dns_name       = module.compute_us_east_1.alb_dns_name
    }
  }
}

output "analytics" {
  description = "The analytics bucket and its key."
  value = {
    bucket      = module.global.analytics_bucket
    kms_key_arn = module.global.analytics_kms_key_arn
  }
}

output "directory_database" {
  description = "The directory database reference every node's RESIDENCY_DIRECTORY_URL secret points at."
  value       = module.global.directory_database
}
