# Global module tests (mock provider): the analytics bucket is private, TLS-only and
# encrypted with its own key; each region's export role is confined to its own prefix;
# DNS records exist only when asked for, with the chosen routing.

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "111122223333" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws", dns_suffix = "amazonaws.com" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:111122223333:key/analytics" }
  }
}

variables {
  analytics_bucket = "residency-analytics"
  exporters = {
    "eu-west-1" = { prefix = "eu-west-1/", export_role_arn = "arn:aws:iam::111122223333:role/residency-eu-west-1-export" }
    "us-east-1" = { prefix = "us-east-1/", export_role_arn = "arn:aws:iam::111122223333:role/residency-us-east-1-export" }
  }
  regional_endpoints = {
    "eu-west-1" = { public_host = "eu-west-1.api.residency.example.com", alb_dns_name = "a.eu-west-1.elb.amazonaws.com", alb_zone_id = "Z1", geo_continent = "EU" }
    "us-east-1" = { public_host = "us-east-1.api.residency.example.com", alb_dns_name = "b.us-east-1.elb.amazonaws.com", alb_zone_id = "Z2", geo_country = "US" }
  }
}

run "the_analytics_bucket_is_encrypted_and_exports_are_confined" {
  command = apply

  assert {
    condition = (
      alltrue([for r in aws_s3_bucket_server_side_encryption_configuration.analytics.rule :
      r.bucket_key_enabled && r.apply_server_side_encryption_by_default[0].kms_master_key_id == aws_kms_key.analytics.arn]) &&
      aws_s3_bucket_public_access_block.analytics.restrict_public_buckets
    )
    error_message = "The analytics bucket must be SSE-KMS with its own key and private."
  }
  assert {
    condition = alltrue([
      for id, e in var.exporters : contains([
        for s in jsondecode(aws_s3_bucket_policy.analytics.policy).Statement :
        s.NotResource[0] if s.Effect == "Deny" && try(s.Principal.AWS, "") == e.export_role_arn
      ], "arn:aws:s3:::residency-analytics/${e.prefix}*")
    ])
    error_message = "Each export role must be denied writes outside its own prefix."
  }
  assert {
    condition     = length(aws_route53_record.global) == 0 && length(aws_route53_record.regional) == 0
    error_message = "No DNS records without a zone."
  }
}

run "latency_records_point_each_region_at_its_load_balancer" {
  command = plan

  variables {
    dns = { zone_id = "Z0ZONE", global_name = "api.residency.example.com", routing = "latency" }
  }

  assert {
    condition     = aws_route53_record.global["eu-west-1"].latency_routing_policy[0].region == "eu-west-1" && aws_route53_record.regional["us-east-1"].name == "us-east-1.api.residency.example.com"
    error_message = "Latency records route to each region's own load balancer."
  }
}

run "nested_prefixes_are_refused" {
  command = plan

  variables {
    exporters = {
      "eu-west-1"    = { prefix = "eu/", export_role_arn = "arn:aws:iam::111122223333:role/a" }
      "eu-central-1" = { prefix = "eu/central/", export_role_arn = "arn:aws:iam::111122223333:role/b" }
    }
  }

  expect_failures = [var.exporters]
}
