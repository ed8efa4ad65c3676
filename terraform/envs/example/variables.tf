# Example environment: inputs. `regions` comes from the generated, committed
# regions.auto.tfvars.json (`cargo run -p residency -- terraform-vars`); the network,
# image and DNS inputs are the operator's (a *.tfvars file of their own).

variable "regions" {
  description = "The catalogue, rendered by `cargo run -p residency -- terraform-vars`. Do not edit by hand."
  type = map(object({
    jurisdiction = string
    display_name = string
    endpoints = object({
      public        = string
      public_host   = string
      internal      = string
      internal_host = string
      internal_port = number
    })
    kms_key_alias = string
    data_bucket   = string
    audit_bucket  = string
    analytics = object({
      bucket = string
      prefix = string
    })
    database = object({
      primary = object({
        identifier = string
        host       = string
        port       = number
        database   = string
        user       = string
        region     = string
      })
      replicas = list(object({
        identifier = string
        host       = string
        port       = number
        region     = string
      }))
    })
    secrets = map(object({
      env  = optional(string)
      file = optional(string)
    }))
    secret_env_names = list(string)
  }))

  validation {
    condition     = toset(keys(var.regions)) == toset(local.wired_regions)
    error_message = "The catalogue's regions and the regions wired in providers.tf/main.tf differ: add (or remove) the provider alias and module calls for each region (docs/operations.md)."
  }

  validation {
    condition     = length(distinct([for r in values(var.regions) : r.analytics.bucket])) == 1
    error_message = "Every region must export to the same global analytics bucket."
  }

  # The node gets secrets from Secrets Manager as environment variables; a `{ file = }`
  # reference has no ECS counterpart here.
  validation {
    condition     = alltrue(flatten([for r in values(var.regions) : [for s in values(r.secrets) : s.env != null]]))
    error_message = "On ECS every catalogue secret must be an { env = \"NAME\" } reference (Secrets Manager injects environment variables)."
  }
}

variable "environment" {
  description = "Name of the deployment (tags)."
  type        = string
  default     = "example"
}

variable "global_region" {
  description = "The region hosting the analytics bucket and its key."
  type        = string
  default     = "eu-west-1"
}

variable "networks" {
  description = "Per region: its VPC, subnets, TLS certificate, and the egress addresses (NAT) the other regions see."
  type = map(object({
    vpc_id             = string
    public_subnet_ids  = list(string)
    private_subnet_ids = list(string)
    certificate_arn    = string
    egress_cidrs       = list(string)
  }))

  validation {
    condition     = toset(keys(var.networks)) == toset(local.wired_regions)
    error_message = "Every region needs its network (and only catalogue regions have one)."
  }
}

variable "image" {
  description = "The `residency` image (infra/Dockerfile) as each region's registry names it; `{region}` is replaced by the region id."
  type        = string
}

variable "directory_database" {
  description = "The tenant directory database reference (no credentials; the URL is the RESIDENCY_DIRECTORY_URL secret)."
  type = object({
    region     = string
    host       = string
    port       = number
    database   = string
    secret_ref = string
  })
  default = null
}

variable "dns" {
  description = "Optional DNS records for the regional endpoints (see the global module)."
  type = object({
    zone_id     = string
    global_name = string
    routing     = string
  })
  default = null
}

variable "analytics_reader_arns" {
  description = "Principals that read the analytics bucket."
  type        = list(string)
  default     = []
}
