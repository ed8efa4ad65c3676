# Region compute module: outputs for DNS (global module) and operators.

output "alb_dns_name" {
  description = "The load balancer's DNS name (target of the region's public and internal names)."
  value       = aws_lb.node.dns_name
}

output "alb_zone_id" {
  description = "The load balancer's hosted zone, for alias records."
  value       = aws_lb.node.zone_id
}

output "cluster_name" {
  description = "The region's ECS cluster."
  value       = aws_ecs_cluster.region.name
}

output "service_name" {
  description = "The node service."
  value       = aws_ecs_service.node.name
}

output "export_task_definition" {
  description = "The export task definition family (run it by hand with `aws ecs run-task`)."
  value       = aws_ecs_task_definition.export.family
}
