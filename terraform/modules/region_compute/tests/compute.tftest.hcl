# Region compute module tests (mock provider, plan only): TLS at the load balancer,
# secrets injected by Secrets Manager reference and never by value, the node runs as the
# api role and the export as the export role, autoscaling on CPU and request count.

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws", dns_suffix = "amazonaws.com" }
  }
}

variables {
  region             = "eu-west-1"
  image              = "residency-eu-west-1/residency:1.0.0"
  vpc_id             = "vpc-0eu"
  public_subnet_ids  = ["subnet-a", "subnet-b"]
  private_subnet_ids = ["subnet-c", "subnet-d"]
  certificate_arn    = "arn:aws:acm:eu-west-1:111122223333:certificate/0"
  role_arns = {
    api       = "arn:aws:iam::111122223333:role/residency-eu-west-1-api"
    router    = "arn:aws:iam::111122223333:role/residency-eu-west-1-router"
    export    = "arn:aws:iam::111122223333:role/residency-eu-west-1-export"
    execution = "arn:aws:iam::111122223333:role/residency-eu-west-1-execution"
  }
  kms_key_arn      = "arn:aws:kms:eu-west-1:111122223333:key/0"
  node_environment = { RESIDENCY_REGION = "eu-west-1", RESIDENCY_LISTEN = "0.0.0.0:8080" }
  secret_arns = {
    RESIDENCY_DB_PASSWORD       = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:residency/eu-west-1/RESIDENCY_DB_PASSWORD"
    RESIDENCY_FORWARDING_SECRET = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:residency/eu-west-1/RESIDENCY_FORWARDING_SECRET"
  }
  internal_ingress_cidrs = ["10.1.0.0/24"]
}

run "the_node_serves_tls_and_gets_secrets_by_reference" {
  command = plan

  assert {
    condition = alltrue([for l in concat([aws_lb_listener.public], aws_lb_listener.internal) :
    l.protocol == "HTTPS" && l.ssl_policy == "ELBSecurityPolicy-TLS13-1-2-2021-06"])
    error_message = "Both endpoints must be HTTPS with a TLS 1.2+ policy."
  }
  assert {
    condition     = aws_lb_listener.internal[0].port == 8443 && aws_lb.node.drop_invalid_header_fields
    error_message = "The internal endpoint listens on the catalogue's port."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_ecs_task_definition.node.container_definitions)[0].secrets :
      s.valueFrom == var.secret_arns[s.name]
    ]) && length(jsondecode(aws_ecs_task_definition.node.container_definitions)[0].secrets) == 2
    error_message = "Every secret must come from Secrets Manager by ARN."
  }
  assert {
    condition = alltrue([
      for e in jsondecode(aws_ecs_task_definition.node.container_definitions)[0].environment :
      !contains(keys(var.secret_arns), e.name)
    ])
    error_message = "No secret may be passed as a plain environment value."
  }
  assert {
    condition = (
      aws_ecs_task_definition.node.task_role_arn == var.role_arns.api &&
      aws_ecs_task_definition.export.task_role_arn == var.role_arns.export &&
      jsondecode(aws_ecs_task_definition.node.container_definitions)[0].readonlyRootFilesystem
    )
    error_message = "The node runs as the api role, the export as the export role, read-only."
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.export.container_definitions)[0].command == ["export", "run", "--region", "eu-west-1", "--once"]
    error_message = "The export task runs the region's export."
  }
}

run "the_service_scales_on_cpu_and_requests" {
  command = plan

  assert {
    condition = (
      aws_appautoscaling_policy.cpu.target_tracking_scaling_policy_configuration[0].predefined_metric_specification[0].predefined_metric_type == "ECSServiceAverageCPUUtilization" &&
      aws_appautoscaling_policy.requests.target_tracking_scaling_policy_configuration[0].predefined_metric_specification[0].predefined_metric_type == "ALBRequestCountPerTarget"
    )
    error_message = "The node service must scale on CPU and on request count."
  }
  assert {
    condition     = aws_appautoscaling_target.node.min_capacity == 2 && aws_cloudwatch_event_rule.export.schedule_expression == "rate(1 hour)"
    error_message = "Autoscaling keeps two nodes; the export runs hourly by default."
  }
}

run "a_secret_passed_by_value_is_refused" {
  command = plan

  variables {
    secret_arns = { RESIDENCY_DB_PASSWORD = "hunter2" }
  }

  expect_failures = [var.secret_arns]
}

run "an_unpinned_image_is_refused" {
  command = plan

  variables {
    image = "residency:latest"
  }

  expect_failures = [var.image]
}

run "the_task_has_the_time_its_node_needs_to_stop" {
  command = plan

  assert {
    condition = (jsondecode(aws_ecs_task_definition.node.container_definitions)[0].stopTimeout
    >= var.shutdown.deregistration_delay_seconds + var.shutdown.drain_timeout_seconds + 10)
    error_message = "ECS must not kill the node before its deregistration delay, drain and audit flush (10 s) are over."
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.node.container_definitions)[0].stopTimeout <= 120
    error_message = "Fargate allows a stop timeout of at most 120 s."
  }
  assert {
    condition = length([
      for e in jsondecode(aws_ecs_task_definition.node.container_definitions)[0].environment : e
      if(e.name == "RESIDENCY_DEREGISTRATION_DELAY" && e.value == "10")
      || (e.name == "RESIDENCY_DRAIN_TIMEOUT" && e.value == "20")
    ]) == 2
    error_message = "The node must be told the deregistration delay and drain timeout the stop timeout was computed from."
  }
  assert {
    condition     = aws_lb_target_group.node.deregistration_delay == "30"
    error_message = "The load balancer lets in-flight requests finish while the node serves on and drains."
  }
}

run "a_shutdown_longer_than_fargate_allows_is_refused" {
  command = plan

  variables {
    shutdown = { deregistration_delay_seconds = 90, drain_timeout_seconds = 20 }
  }

  expect_failures = [var.shutdown]
}
