# Region compute module: the load balancer and security groups. TLS terminates at the
# ALB (TLS 1.2+ policy); the public listener serves clients on 443, the internal
# listener serves the other regions' routers on the catalogue's internal port; tasks
# accept traffic from the ALB only.

resource "aws_security_group" "alb" {
  name        = "${local.name}-alb"
  description = "Residency ${var.region}: public and internal endpoints"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "alb_public" {
  for_each          = toset(var.public_ingress_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "Public API over TLS"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "alb_internal" {
  for_each          = toset(var.internal_ingress_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "Inter-region forwarding over TLS"
  ip_protocol       = "tcp"
  from_port         = var.internal_port
  to_port           = var.internal_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_tasks" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the node tasks"
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_security_group" "tasks" {
  name        = "${local.name}-tasks"
  description = "Residency ${var.region}: node and export tasks"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_alb" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "From the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  referenced_security_group_id = aws_security_group.alb.id
}

# HTTPS out: AWS APIs (KMS, S3, Secrets Manager, logs) and the other regions' internal
# endpoints. Nothing else leaves the tasks; the database is reached through the region
# module's client group.
resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to AWS APIs and other regions' internal endpoints"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "tasks_internal" {
  count             = var.internal_port == 443 ? 0 : 1
  security_group_id = aws_security_group.tasks.id
  description       = "Forwarding to other regions' internal endpoints"
  ip_protocol       = "tcp"
  from_port         = var.internal_port
  to_port           = var.internal_port
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_lb" "node" {
  #checkov:skip=CKV_AWS_91:ALB access logs can only go to an SSE-S3 bucket, outside the region's key; requests are traced and audited by the node itself
  #checkov:skip=CKV2_AWS_28:rate limits and request validation are enforced per API key by the node; a WAF web ACL is an account-level choice left to operators
  name                       = substr("${local.name}-node", 0, 32)
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  idle_timeout               = 60
  tags                       = local.tags
}

resource "aws_lb_target_group" "node" {
  #checkov:skip=CKV_AWS_378:TLS terminates at the ALB; targets are in private subnets and accept traffic from the ALB's security group only
  name        = substr("${local.name}-node", 0, 32)
  port        = var.container_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  # In-flight requests of a deregistered node may finish for as long as the node itself
  # serves on and drains (var.shutdown).
  deregistration_delay = var.shutdown.deregistration_delay_seconds + var.shutdown.drain_timeout_seconds
  tags                 = local.tags

  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "public" {
  load_balancer_arn = aws_lb.node.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  tags              = local.tags

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.node.arn
  }
}

resource "aws_lb_listener" "internal" {
  count             = var.internal_port == 443 ? 0 : 1
  load_balancer_arn = aws_lb.node.arn
  port              = var.internal_port
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  tags              = local.tags

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.node.arn
  }
}
