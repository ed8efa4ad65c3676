# Example environment: every catalogue region (a region module and its compute, each
# with the region's own provider alias) and the global module. The inputs are the
# generated regions.auto.tfvars.json; a catalogue test fails when a region of regions/
# has no module call here.

locals {
  # The regions wired below; the `regions` variable must name exactly these.
  wired_regions = [
    "ap-southeast-1",
    "eu-central-1",
    "eu-west-1",
    "us-east-1",
  ]

  analytics_bucket = one(distinct([for r in values(var.regions) : r.analytics.bucket]))

  # Outputs of every region module, by region id. Only outputs, never whole modules:
  # the global module and the regions refer to each other's outputs (export roles, the
  # analytics key), which would otherwise be a cycle.
  export_role_arns = {
    "ap-southeast-1" = module.region_ap_southeast_1.role_arns.export
    "eu-central-1"   = module.region_eu_central_1.role_arns.export
    "eu-west-1"      = module.region_eu_west_1.role_arns.export
    "us-east-1"      = module.region_us_east_1.role_arns.export
  }
  load_balancers = {
    "ap-southeast-1" = { dns_name = module.compute_ap_southeast_1.alb_dns_name, zone_id = module.compute_ap_southeast_1.alb_zone_id }
    "eu-central-1"   = { dns_name = module.compute_eu_central_1.alb_dns_name, zone_id = module.compute_eu_central_1.alb_zone_id }
    "eu-west-1"      = { dns_name = module.compute_eu_west_1.alb_dns_name, zone_id = module.compute_eu_west_1.alb_zone_id }
    "us-east-1"      = { dns_name = module.compute_us_east_1.alb_dns_name, zone_id = module.compute_us_east_1.alb_zone_id }
  }

  # Who may reach a region's internal endpoint: the other regions' egress addresses.
  peer_cidrs = {
    for id in local.wired_regions : id => distinct(flatten([
      for other, network in var.networks : network.egress_cidrs if other != id
    ]))
  }
}

module "global" {
  source    = "../../modules/global"
  providers = { aws = aws.global }

  analytics_bucket = local.analytics_bucket
  exporters = {
    for id, role in local.export_role_arns : id => {
      prefix          = var.regions[id].analytics.prefix
      export_role_arn = role
    }
  }
  analytics_reader_arns = var.analytics_reader_arns
  directory_database    = var.directory_database
  dns                   = var.dns
  regional_endpoints = {
    for id, lb in local.load_balancers : id => {
      public_host  = var.regions[id].endpoints.public_host
      alb_dns_name = lb.dns_name
      alb_zone_id  = lb.zone_id
    }
  }
}


module "region_ap_southeast_1" {
  source    = "../../modules/region"
  providers = { aws = aws.ap_southeast_1 }

  region                = "ap-southeast-1"
  jurisdiction          = var.regions["ap-southeast-1"].jurisdiction
  kms_key_alias         = var.regions["ap-southeast-1"].kms_key_alias
  data_bucket           = var.regions["ap-southeast-1"].data_bucket
  audit_bucket          = var.regions["ap-southeast-1"].audit_bucket
  analytics             = var.regions["ap-southeast-1"].analytics
  analytics_kms_key_arn = module.global.analytics_kms_key_arn
  database              = var.regions["ap-southeast-1"].database
  secret_env_names      = var.regions["ap-southeast-1"].secret_env_names
  vpc_id                = var.networks["ap-southeast-1"].vpc_id
  database_subnet_ids   = var.networks["ap-southeast-1"].private_subnet_ids
}

module "compute_ap_southeast_1" {
  source    = "../../modules/region_compute"
  providers = { aws = aws.ap_southeast_1 }

  region                 = "ap-southeast-1"
  image                  = replace(var.image, "{region}", "ap-southeast-1")
  vpc_id                 = var.networks["ap-southeast-1"].vpc_id
  public_subnet_ids      = var.networks["ap-southeast-1"].public_subnet_ids
  private_subnet_ids     = var.networks["ap-southeast-1"].private_subnet_ids
  certificate_arn        = var.networks["ap-southeast-1"].certificate_arn
  internal_port          = var.regions["ap-southeast-1"].endpoints.internal_port
  internal_ingress_cidrs = local.peer_cidrs["ap-southeast-1"]
  role_arns              = module.region_ap_southeast_1.role_arns
  kms_key_arn            = module.region_ap_southeast_1.kms_key_arn
  node_environment       = module.region_ap_southeast_1.node_environment
  secret_arns            = module.region_ap_southeast_1.secret_arns
  security_group_ids     = [module.region_ap_southeast_1.database_client_security_group_id]
}

module "region_eu_central_1" {
  source    = "../../modules/region"
  providers = { aws = aws.eu_central_1 }

  region                = "eu-central-1"
  jurisdiction          = var.regions["eu-central-1"].jurisdiction
  kms_key_alias         = var.regions["eu-central-1"].kms_key_alias
  data_bucket           = var.regions["eu-central-1"].data_bucket
  audit_bucket          = var.regions["eu-central-1"].audit_bucket
  analytics             = var.regions["eu-central-1"].analytics
  analytics_kms_key_arn = module.global.analytics_kms_key_arn
  database              = var.regions["eu-central-1"].database
  secret_env_names      = var.regions["eu-central-1"].secret_env_names
  vpc_id                = var.networks["eu-central-1"].vpc_id
  database_subnet_ids   = var.networks["eu-central-1"].private_subnet_ids
}

module "compute_eu_central_1" {
  source    = "../../modules/region_compute"
  providers = { aws = aws.eu_central_1 }

  region                 = "eu-central-1"
  image                  = replace(var.image, "{region}", "eu-central-1")
  vpc_id                 = var.networks["eu-central-1"].vpc_id
  public_subnet_ids      = var.networks["eu-central-1"].public_subnet_ids
  private_subnet_ids     = var.networks["eu-central-1"].private_subnet_ids
  certificate_arn        = var.networks["eu-central-1"].certificate_arn
  internal_port          = var.regions["eu-central-1"].endpoints.internal_port
  internal_ingress_cidrs = local.peer_cidrs["eu-central-1"]
  role_arns              = module.region_eu_central_1.role_arns
  kms_key_arn            = module.region_eu_central_1.kms_key_arn
  node_environment       = module.region_eu_central_1.node_environment
  secret_arns            = module.region_eu_central_1.secret_arns
  security_group_ids     = [module.region_eu_central_1.database_client_security_group_id]
}

module "region_eu_west_1" {
  source    = "../../modules/region"
  providers = { aws = aws.eu_west_1 }

  region                = "eu-west-1"
  jurisdiction          = var.regions["eu-west-1"].jurisdiction
  kms_key_alias         = var.regions["eu-west-1"].kms_key_alias
  data_bucket           = var.regions["eu-west-1"].data_bucket
  audit_bucket          = var.regions["eu-west-1"].audit_bucket
  analytics             = var.regions["eu-west-1"].analytics
  analytics_kms_key_arn = module.global.analytics_kms_key_arn
  database              = var.regions["eu-west-1"].database
  secret_env_names      = var.regions["eu-west-1"].secret_env_names
  vpc_id                = var.networks["eu-west-1"].vpc_id
  database_subnet_ids   = var.networks["eu-west-1"].private_subnet_ids
}

module "compute_eu_west_1" {
  source    = "../../modules/region_compute"
  providers = { aws = aws.eu_west_1 }

  region                 = "eu-west-1"
  image                  = replace(var.image, "{region}", "eu-west-1")
  vpc_id                 = var.networks["eu-west-1"].vpc_id
  public_subnet_ids      = var.networks["eu-west-1"].public_subnet_ids
  private_subnet_ids     = var.networks["eu-west-1"].private_subnet_ids
  certificate_arn        = var.networks["eu-west-1"].certificate_arn
  internal_port          = var.regions["eu-west-1"].endpoints.internal_port
  internal_ingress_cidrs = local.peer_cidrs["eu-west-1"]
  role_arns              = module.region_eu_west_1.role_arns
  kms_key_arn            = module.region_eu_west_1.kms_key_arn
  node_environment       = module.region_eu_west_1.node_environment
  secret_arns            = module.region_eu_west_1.secret_arns
  security_group_ids     = [module.region_eu_west_1.database_client_security_group_id]
}

module "region_us_east_1" {
  source    = "../../modules/region"
  providers = { aws = aws.us_east_1 }

  region                = "us-east-1"
  jurisdiction          = var.regions["us-east-1"].jurisdiction
  kms_key_alias         = var.regions["us-east-1"].kms_key_alias
  data_bucket           = var.regions["us-east-1"].data_bucket
  audit_bucket          = var.regions["us-east-1"].audit_bucket
  analytics             = var.regions["us-east-1"].analytics
  analytics_kms_key_arn = module.global.analytics_kms_key_arn
  database              = var.regions["us-east-1"].database
  secret_env_names      = var.regions["us-east-1"].secret_env_names
  vpc_id                = var.networks["us-east-1"].vpc_id
  database_subnet_ids   = var.networks["us-east-1"].private_subnet_ids
}

module "compute_us_east_1" {
  source    = "../../modules/region_compute"
  providers = { aws = aws.us_east_1 }

  region                 = "us-east-1"
  image                  = replace(var.image, "{region}", "us-east-1")
  vpc_id                 = var.networks["us-east-1"].vpc_id
  public_subnet_ids      = var.networks["us-east-1"].public_subnet_ids
  private_subnet_ids     = var.networks["us-east-1"].private_subnet_ids
  certificate_arn        = var.networks["us-east-1"].certificate_arn
  internal_port          = var.regions["us-east-1"].endpoints.internal_port
  internal_ingress_cidrs = local.peer_cidrs["us-east-1"]
  role_arns              = module.region_us_east_1.role_arns
  kms_key_arn            = module.region_us_east_1.kms_key_arn
  node_environment       = module.region_us_east_1.node_environment
  secret_arns            = module.region_us_east_1.secret_arns
  security_group_ids     = [module.region_us_east_1.database_client_security_group_id]
}
