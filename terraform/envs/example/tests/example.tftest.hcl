# Example environment test: applies every catalogue region from the committed
# regions.auto.tfvars.json against mock providers, one per alias, each answering as its
# own region (its data sources and the ARNs it mints). A module wired to the wrong alias
# fails its region guard or shows another region's key; a catalogue region with no module
# call fails the `regions` validation.

mock_provider "aws" {
  alias = "ap_southeast_1"
  mock_data "aws_region" {
    defaults = { name = "ap-southeast-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "111122223333" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws", dns_suffix = "amazonaws.com" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:ap-southeast-1:111122223333:key/mock" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::111122223333:role/mock" }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:ap-southeast-1:111122223333:secret:mock" }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = { arn = "arn:aws:ecs:ap-southeast-1:111122223333:cluster/mock" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = {
      arn                  = "arn:aws:ecs:ap-southeast-1:111122223333:task-definition/mock:1"
      arn_without_revision = "arn:aws:ecs:ap-southeast-1:111122223333:task-definition/mock"
    }
  }
  mock_resource "aws_lb" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:ap-southeast-1:111122223333:loadbalancer/app/mock/1"
      arn_suffix = "app/mock/1"
      dns_name   = "mock-1.ap-southeast-1.elb.amazonaws.com"
      zone_id    = "Z0MOCK"
    }
  }
  mock_resource "aws_lb_target_group" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:ap-southeast-1:111122223333:targetgroup/mock/1"
      arn_suffix = "targetgroup/mock/1"
    }
  }
}

mock_provider "aws" {
  alias = "eu_central_1"
  mock_data "aws_region" {
    defaults = { name = "eu-central-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "111122223333" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws", dns_suffix = "amazonaws.com" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-central-1:111122223333:key/mock" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::111122223333:role/mock" }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:eu-central-1:111122223333:secret:mock" }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = { arn = "arn:aws:ecs:eu-central-1:111122223333:cluster/mock" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = {
      arn                  = "arn:aws:ecs:eu-central-1:111122223333:task-definition/mock:1"
      arn_without_revision = "arn:aws:ecs:eu-central-1:111122223333:task-definition/mock"
    }
  }
  mock_resource "aws_lb" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-central-1:111122223333:loadbalancer/app/mock/1"
      arn_suffix = "app/mock/1"
      dns_name   = "mock-1.eu-central-1.elb.amazonaws.com"
      zone_id    = "Z0MOCK"
    }
  }
  mock_resource "aws_lb_target_group" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-central-1:111122223333:targetgroup/mock/1"
      arn_suffix = "targetgroup/mock/1"
    }
  }
}

mock_provider "aws" {
  alias = "eu_west_1"
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
    defaults = { arn = "arn:aws:kms:eu-west-1:111122223333:key/mock" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::111122223333:role/mock" }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:mock" }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = { arn = "arn:aws:ecs:eu-west-1:111122223333:cluster/mock" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = {
      arn                  = "arn:aws:ecs:eu-west-1:111122223333:task-definition/mock:1"
      arn_without_revision = "arn:aws:ecs:eu-west-1:111122223333:task-definition/mock"
    }
  }
  mock_resource "aws_lb" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-west-1:111122223333:loadbalancer/app/mock/1"
      arn_suffix = "app/mock/1"
      dns_name   = "mock-1.eu-west-1.elb.amazonaws.com"
      zone_id    = "Z0MOCK"
    }
  }
  mock_resource "aws_lb_target_group" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-west-1:111122223333:targetgroup/mock/1"
      arn_suffix = "targetgroup/mock/1"
    }
  }
}

mock_provider "aws" {
  alias = "us_east_1"
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "111122223333" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws", dns_suffix = "amazonaws.com" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:111122223333:key/mock" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::111122223333:role/mock" }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:us-east-1:111122223333:secret:mock" }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = { arn = "arn:aws:ecs:us-east-1:111122223333:cluster/mock" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = {
      arn                  = "arn:aws:ecs:us-east-1:111122223333:task-definition/mock:1"
      arn_without_revision = "arn:aws:ecs:us-east-1:111122223333:task-definition/mock"
    }
  }
  mock_resource "aws_lb" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:us-east-1:111122223333:loadbalancer/app/mock/1"
      arn_suffix = "app/mock/1"
      dns_name   = "mock-1.us-east-1.elb.amazonaws.com"
      zone_id    = "Z0MOCK"
    }
  }
  mock_resource "aws_lb_target_group" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:us-east-1:111122223333:targetgroup/mock/1"
      arn_suffix = "targetgroup/mock/1"
    }
  }
}

mock_provider "aws" {
  alias = "global"
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
    defaults = { arn = "arn:aws:kms:eu-west-1:111122223333:key/mock" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::111122223333:role/mock" }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:mock" }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = { arn = "arn:aws:ecs:eu-west-1:111122223333:cluster/mock" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = {
      arn                  = "arn:aws:ecs:eu-west-1:111122223333:task-definition/mock:1"
      arn_without_revision = "arn:aws:ecs:eu-west-1:111122223333:task-definition/mock"
    }
  }
  mock_resource "aws_lb" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-west-1:111122223333:loadbalancer/app/mock/1"
      arn_suffix = "app/mock/1"
      dns_name   = "mock-1.eu-west-1.elb.amazonaws.com"
      zone_id    = "Z0MOCK"
    }
  }
  mock_resource "aws_lb_target_group" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-west-1:111122223333:targetgroup/mock/1"
      arn_suffix = "targetgroup/mock/1"
    }
  }
}

# RDS names hosts after the identifier and an account hash; the catalogue holds them.
override_resource {
  target = module.region_ap_southeast_1.aws_db_instance.primary
  values = { address = "residency-ap-southeast-1.cw3kd8pm5vha.ap-southeast-1.rds.amazonaws.com" }
}
override_resource {
  target = module.region_ap_southeast_1.aws_db_instance.replica
  values = { address = "residency-ap-southeast-1-replica-1.cw3kd8pm5vha.ap-southeast-1.rds.amazonaws.com" }
}
override_resource {
  target = module.region_eu_central_1.aws_db_instance.primary
  values = { address = "residency-eu-central-1.c9akciq32ldn.eu-central-1.rds.amazonaws.com" }
}
override_resource {
  target = module.region_eu_central_1.aws_db_instance.replica
  values = { address = "residency-eu-central-1-replica-1.c9akciq32ldn.eu-central-1.rds.amazonaws.com" }
}
override_resource {
  target = module.region_eu_west_1.aws_db_instance.primary
  values = { address = "residency-eu-west-1.cxq4bm2h7tzk.eu-west-1.rds.amazonaws.com" }
}
override_resource {
  target = module.region_eu_west_1.aws_db_instance.replica
  values = { address = "residency-eu-west-1-replica-1.cxq4bm2h7tzk.eu-west-1.rds.amazonaws.com" }
}
override_resource {
  target = module.region_us_east_1.aws_db_instance.primary
  values = { address = "residency-us-east-1.c7nn1rfs0yqe.us-east-1.rds.amazonaws.com" }
}
override_resource {
  target = module.region_us_east_1.aws_db_instance.replica
  values = { address = "residency-us-east-1-replica-1.c7nn1rfs0yqe.us-east-1.rds.amazonaws.com" }
}

variables {
  image = "residency-{region}/residency:1.0.0"
  networks = {
    "ap-southeast-1" = {
      vpc_id             = "vpc-0"
      public_subnet_ids  = ["subnet-0a", "subnet-0b"]
      private_subnet_ids = ["subnet-0c", "subnet-0d"]
      certificate_arn    = "arn:aws:acm:ap-southeast-1:111122223333:certificate/0"
      egress_cidrs       = ["10.0.0.0/24"]
    }
    "eu-central-1" = {
      vpc_id             = "vpc-1"
      public_subnet_ids  = ["subnet-1a", "subnet-1b"]
      private_subnet_ids = ["subnet-1c", "subnet-1d"]
      certificate_arn    = "arn:aws:acm:eu-central-1:111122223333:certificate/1"
      egress_cidrs       = ["10.1.0.0/24"]
    }
    "eu-west-1" = {
      vpc_id             = "vpc-2"
      public_subnet_ids  = ["subnet-2a", "subnet-2b"]
      private_subnet_ids = ["subnet-2c", "subnet-2d"]
      certificate_arn    = "arn:aws:acm:eu-west-1:111122223333:certificate/2"
      egress_cidrs       = ["10.2.0.0/24"]
    }
    "us-east-1" = {
      vpc_id             = "vpc-3"
      public_subnet_ids  = ["subnet-3a", "subnet-3b"]
      private_subnet_ids = ["subnet-3c", "subnet-3d"]
      certificate_arn    = "arn:aws:acm:us-east-1:111122223333:certificate/3"
      egress_cidrs       = ["10.3.0.0/24"]
    }
  }
}

run "every_catalogue_region_applies_with_its_own_provider" {
  command = apply

  assert {
    condition     = keys(output.node_configuration) == ["ap-southeast-1", "eu-central-1", "eu-west-1", "us-east-1"]
    error_message = "Every catalogue region must be provisioned."
  }
  assert {
    condition     = alltrue([for id, node in output.node_configuration : strcontains(node.kms_key_arn, ":${id}:")])
    error_message = "A region's data would be encrypted with another region's key: check the provider aliases in main.tf."
  }
  assert {
    condition     = alltrue([for id, node in output.node_configuration : node.data_bucket == var.regions[id].data_bucket && node.kms_key_alias == var.regions[id].kms_key_alias])
    error_message = "The buckets and key aliases must be the catalogue's."
  }
  assert {
    condition     = alltrue([for id, node in output.node_configuration : strcontains(node.alb_dns_name, ".${id}.")])
    error_message = "A region's nodes run in another region: check the provider aliases in main.tf."
  }
  assert {
    condition     = jsonencode(local.peer_cidrs["eu-west-1"]) == jsonencode(["10.0.0.0/24", "10.1.0.0/24", "10.3.0.0/24"])
    error_message = "A region's internal endpoint must admit exactly the other regions."
  }
}

run "a_catalogue_region_without_a_module_call_is_refused" {
  command = plan

  variables {
    regions = merge(var.regions, {
      "eu-north-1" = merge(var.regions["eu-west-1"], {
        kms_key_alias = "alias/residency-eu-north-1"
        data_bucket   = "residency-eu-north-1-data"
        audit_bucket  = "residency-eu-north-1-audit"
      })
    })
  }

  expect_failures = [var.regions]
}
