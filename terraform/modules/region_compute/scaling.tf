# Region compute module: autoscaling of the node service on CPU and on ALB requests per
# task, and the analytics export as a scheduled Fargate task (EventBridge).

resource "aws_appautoscaling_target" "node" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.region.name}/${aws_ecs_service.node.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${local.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.node.service_namespace
  resource_id        = aws_appautoscaling_target.node.resource_id
  scalable_dimension = aws_appautoscaling_target.node.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "requests" {
  name               = "${local.name}-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.node.service_namespace
  resource_id        = aws_appautoscaling_target.node.resource_id
  scalable_dimension = aws_appautoscaling_target.node.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.requests_per_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.node.arn_suffix}/${aws_lb_target_group.node.arn_suffix}"
    }
  }
}

# EventBridge runs the export task: it may start that task definition family only, in
# this cluster, and pass only the export and execution roles, to ECS tasks only.
resource "aws_iam_role" "scheduler" {
  name = "${local.name}-export-scheduler"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "events.${local.dns_suffix}" }
    }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy" "scheduler" {
  name = "${local.name}-export-scheduler"
  role = aws_iam_role.scheduler.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "RunExport"
        Effect    = "Allow"
        Action    = "ecs:RunTask"
        Resource  = "${aws_ecs_task_definition.export.arn_without_revision}:*"
        Condition = { ArnEquals = { "ecs:cluster" = aws_ecs_cluster.region.arn } }
      },
      {
        Sid       = "PassExportRoles"
        Effect    = "Allow"
        Action    = "iam:PassRole"
        Resource  = [var.role_arns.export, var.role_arns.execution]
        Condition = { StringEquals = { "iam:PassedToService" = "ecs-tasks.${local.dns_suffix}" } }
      },
    ]
  })
}

resource "aws_cloudwatch_event_rule" "export" {
  name                = "${local.name}-export"
  description         = "Residency ${var.region}: anonymized analytics export"
  schedule_expression = var.export_schedule
  tags                = local.tags
}

resource "aws_cloudwatch_event_target" "export" {
  rule     = aws_cloudwatch_event_rule.export.name
  arn      = aws_ecs_cluster.region.arn
  role_arn = aws_iam_role.scheduler.arn

  ecs_target {
    task_definition_arn = aws_ecs_task_definition.export.arn_without_revision
    task_count          = 1
    launch_type         = "FARGATE"
    platform_version    = "LATEST"
    propagate_tags      = "TASK_DEFINITION"

    network_configuration {
      subnets          = var.private_subnet_ids
      security_groups  = concat([aws_security_group.tasks.id], var.security_group_ids)
      assign_public_ip = false
    }
  }
}
