# Region compute module: the regional node as an ECS Fargate service behind an ALB with
# TLS (public endpoint on 443, internal endpoint for the other regions' routers), scaled
# on CPU and request count, and the analytics export as a scheduled task. Environment
# comes from the region module's outputs; secrets from Secrets Manager by ARN, so no
# secret value is in the task definition or in state.

data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  name       = "${var.name_prefix}-${var.region}"
  dns_suffix = data.aws_partition.current.dns_suffix
  tags       = merge(var.tags, { "residency:region" = var.region })

  environment = [for k in sort(keys(var.node_environment)) : { name = k, value = var.node_environment[k] }]
  secrets     = [for k in sort(keys(var.secret_arns)) : { name = k, valueFrom = var.secret_arns[k] }]

  # What the node needs after SIGTERM: its deregistration delay, its drain, then the
  # audit queue's flush (node::AUDIT_DRAIN_TIMEOUT, 10 s) and a margin. ECS kills the
  # container after stopTimeout (default 30 s): it must cover all of it.
  audit_flush_seconds = 10
  stop_timeout_seconds = (var.shutdown.deregistration_delay_seconds
  + var.shutdown.drain_timeout_seconds + local.audit_flush_seconds + 5)
  node_environment = concat(local.environment, [
    { name = "RESIDENCY_DEREGISTRATION_DELAY", value = tostring(var.shutdown.deregistration_delay_seconds) },
    { name = "RESIDENCY_DRAIN_TIMEOUT", value = tostring(var.shutdown.drain_timeout_seconds) },
  ])

  export_command = coalesce(var.export_command, ["export", "run", "--region", var.region, "--once"])

  container_defaults = {
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    user                   = "10001:10001"
    environment            = local.environment
    secrets                = local.secrets
    linuxParameters        = { initProcessEnabled = true }
  }
}

resource "terraform_data" "region_guard" {
  input = var.region

  lifecycle {
    precondition {
      condition     = data.aws_region.current.name == var.region
      error_message = "The aws provider passed to this module is for another region than var.region."
    }
  }
}

resource "aws_cloudwatch_log_group" "node" {
  name              = "/${var.name_prefix}/${var.region}/node"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

resource "aws_cloudwatch_log_group" "export" {
  name              = "/${var.name_prefix}/${var.region}/export"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

resource "aws_ecs_cluster" "region" {
  name = local.name
  tags = local.tags

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  depends_on = [terraform_data.region_guard]
}

resource "aws_ecs_cluster_capacity_providers" "region" {
  cluster_name       = aws_ecs_cluster.region.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_ecs_task_definition" "node" {
  family                   = "${local.name}-node"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = var.role_arns.execution
  task_role_arn            = var.role_arns.api
  tags                     = local.tags

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([merge(local.container_defaults, {
    name        = "node"
    command     = ["serve", "--region", var.region]
    environment = local.node_environment
    stopTimeout = local.stop_timeout_seconds
    portMappings = [{
      containerPort = var.container_port
      protocol      = "tcp"
    }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.node.name
        "awslogs-region"        = var.region
        "awslogs-stream-prefix" = "node"
      }
    }
  })])
}

resource "aws_ecs_task_definition" "export" {
  family                   = "${local.name}-export"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = var.role_arns.execution
  task_role_arn            = var.role_arns.export
  tags                     = local.tags

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([merge(local.container_defaults, {
    name    = "export"
    command = local.export_command
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.export.name
        "awslogs-region"        = var.region
        "awslogs-stream-prefix" = "export"
      }
    }
  })])
}

resource "aws_ecs_service" "node" {
  name                   = "${local.name}-node"
  cluster                = aws_ecs_cluster.region.id
  task_definition        = aws_ecs_task_definition.node.arn
  desired_count          = var.desired_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  propagate_tags         = "SERVICE"
  enable_execute_command = false
  tags                   = local.tags

  # Deployments replace tasks gradually and roll back on failed health checks.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = concat([aws_security_group.tasks.id], var.security_group_ids)
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.node.arn
    container_name   = "node"
    container_port   = var.container_port
  }

  lifecycle {
    # Autoscaling owns the count after creation.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.public, aws_lb_listener.internal]
}
