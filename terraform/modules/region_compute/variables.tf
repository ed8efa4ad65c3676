# Region compute module: inputs. The region module's outputs (roles, key, secrets, node
# environment, database client group) plus the network and sizing of the region's nodes.

variable "region" {
  description = "The region id; must be the provider's region."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of resource names; must match the region module's (log groups, secrets)."
  type        = string
  default     = "residency"
}

variable "image" {
  description = "The `residency` container image (infra/Dockerfile), pulled from the region's registry."
  type        = string

  validation {
    condition     = length(var.image) > 0 && !endswith(var.image, ":latest")
    error_message = "Pin the image to a tag or digest; :latest makes deployments unreproducible."
  }
}

variable "cpu" {
  description = "Fargate CPU units of a node task."
  type        = number
  default     = 1024
}

variable "memory" {
  description = "Fargate memory (MiB) of a node task."
  type        = number
  default     = 2048
}

variable "desired_count" {
  description = "Node tasks at creation; autoscaling moves it between min_count and max_count."
  type        = number
  default     = 2
}

variable "min_count" {
  description = "Fewest node tasks autoscaling keeps."
  type        = number
  default     = 2

  validation {
    condition     = var.min_count >= 1
    error_message = "A region needs at least one node."
  }
}

variable "max_count" {
  description = "Most node tasks autoscaling starts."
  type        = number
  default     = 12
}

variable "cpu_target_percent" {
  description = "Target average CPU utilisation of the node service."
  type        = number
  default     = 60
}

variable "requests_per_target" {
  description = "Target ALB requests per node task (per minute)."
  type        = number
  default     = 1000
}

variable "vpc_id" {
  description = "The region's VPC."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets of the load balancer (two or more availability zones)."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Private subnets of the node and export tasks."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate (in this region) for the public and internal host names."
  type        = string
}

variable "public_ingress_cidrs" {
  description = "Who may reach the public endpoint (443)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "internal_port" {
  description = "Port of the internal endpoint other regions' routers forward to (the catalogue's endpoints.internal)."
  type        = number
  default     = 8443
}

variable "internal_ingress_cidrs" {
  description = "Egress addresses of the other regions (their NAT gateways): who may reach the internal endpoint."
  type        = list(string)
  default     = []
}

variable "container_port" {
  description = "Port `residency serve` listens on inside the task (RESIDENCY_LISTEN)."
  type        = number
  default     = 8080
}

variable "role_arns" {
  description = "The region module's role_arns output (api, router, export, execution)."
  type = object({
    api       = string
    router    = string
    export    = string
    execution = string
  })
}

variable "kms_key_arn" {
  description = "The region's KMS key (log groups are encrypted with it)."
  type        = string
}

variable "node_environment" {
  description = "Plain environment of the node (the region module's node_environment output)."
  type        = map(string)
}

variable "secret_arns" {
  description = "Secrets Manager secrets injected into the node, keyed by environment variable (the region module's secret_arns output)."
  type        = map(string)

  validation {
    condition     = alltrue([for arn in values(var.secret_arns) : startswith(arn, "arn:")])
    error_message = "Secrets are passed by ARN (by reference), never by value."
  }
}

variable "security_group_ids" {
  description = "Extra security groups of the tasks, e.g. the region module's database_client_security_group_id."
  type        = list(string)
  default     = []
}

variable "export_schedule" {
  description = "When the analytics export runs (EventBridge schedule expression)."
  type        = string
  default     = "rate(1 hour)"
}

variable "export_command" {
  description = "Arguments of the export task (after the `residency` entrypoint). Null means `export run --region <region> --once` (one pass per schedule; the replica URL as the `residency_export` role comes from the RESIDENCY_EXPORT_REPLICA_URL secret)."
  type        = list(string)
  default     = null
}

variable "shutdown" {
  description = "How the node stops on SIGTERM: seconds it keeps serving while /readyz fails (deregistration_delay_seconds), then the longest it waits for in-flight requests (drain_timeout_seconds). The task's stop timeout covers both and the audit queue's flush."
  type = object({
    deregistration_delay_seconds = number
    drain_timeout_seconds        = number
  })
  default = {
    deregistration_delay_seconds = 10
    drain_timeout_seconds        = 20
  }

  validation {
    condition = (var.shutdown.deregistration_delay_seconds >= 0
      && var.shutdown.drain_timeout_seconds >= 1
    && var.shutdown.deregistration_delay_seconds + var.shutdown.drain_timeout_seconds <= 100)
    error_message = "The deregistration delay and the drain timeout must leave room for the audit flush within Fargate's 120 s stop timeout (their sum at most 100 s)."
  }
}

variable "log_retention_days" {
  description = "Retention of the node and export logs (in the region, encrypted with its key)."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
