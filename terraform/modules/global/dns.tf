# Global module: optional DNS. Each region's own public name (the catalogue's
# `endpoints.public`) aliases its load balancer; a global name routes clients to a
# nearby region by latency or geolocation. Routing is only an entry point: the home
# region of each tenant is decided by the router, never by DNS.

locals {
  dns_records = var.dns == null ? {} : var.regional_endpoints
}

resource "aws_route53_record" "regional" {
  #checkov:skip=CKV2_AWS_23:aliases a regional load balancer created by the region_compute module and passed in (regional_endpoints)
  for_each = local.dns_records

  zone_id = var.dns.zone_id
  name    = each.value.public_host
  type    = "A"

  alias {
    name                   = each.value.alb_dns_name
    zone_id                = each.value.alb_zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "global" {
  #checkov:skip=CKV2_AWS_23:aliases a regional load balancer created by the region_compute module and passed in (regional_endpoints)
  for_each = local.dns_records

  zone_id        = var.dns.zone_id
  name           = var.dns.global_name
  type           = "A"
  set_identifier = each.key

  alias {
    name                   = each.value.alb_dns_name
    zone_id                = each.value.alb_zone_id
    evaluate_target_health = true
  }

  dynamic "latency_routing_policy" {
    for_each = var.dns.routing == "latency" ? [each.key] : []
    content {
      region = latency_routing_policy.value
    }
  }

  dynamic "geolocation_routing_policy" {
    for_each = var.dns.routing == "geolocation" ? [each.value] : []
    content {
      continent = geolocation_routing_policy.value.geo_continent
      country   = geolocation_routing_policy.value.geo_country
    }
  }

  lifecycle {
    precondition {
      condition     = var.dns.routing != "geolocation" || each.value.geo_continent != null || each.value.geo_country != null
      error_message = "Geolocation routing needs geo_continent or geo_country for every region."
    }
  }
}
