# Global module: inputs. The analytics bucket receives only anonymized exports; each
# region writes under its own prefix with its own export role.

variable "name_prefix" {
  description = "Prefix of resource names."
  type        = string
  default     = "residency"
}

variable "analytics_bucket" {
  description = "The global analytics bucket (every region's `analytics.bucket`; they must agree)."
  type        = string
}

variable "exporters" {
  description = "Per region: its analytics prefix and export role ARN. Each role may write under its own prefix only."
  type = map(object({
    prefix          = string
    export_role_arn = string
  }))

  validation {
    condition     = length(distinct([for e in values(var.exporters) : e.prefix])) == length(var.exporters)
    error_message = "Every region needs its own analytics prefix."
  }

  validation {
    condition = alltrue(flatten([
      for a, ea in var.exporters : [
        for b, eb in var.exporters : a == b || !startswith(ea.prefix, eb.prefix)
      ]
    ]))
    error_message = "One region's analytics prefix lies inside another's: a region could overwrite another region's export."
  }
}

variable "analytics_reader_arns" {
  description = "Principals of the data and analytics teams that read the analytics bucket."
  type        = list(string)
  default     = []
}

variable "key_admin_arns" {
  description = "Principals that administer (not use) the analytics key. Empty means the account root."
  type        = list(string)
  default     = []
}

variable "directory_database" {
  description = "Where the tenant directory lives (tenant id to home region; no personal data): every node's RESIDENCY_DIRECTORY_URL points here. The password is a Secrets Manager reference, never a value."
  type = object({
    region     = string
    host       = string
    port       = number
    database   = string
    secret_ref = string
  })
  default = null

  validation {
    condition     = var.directory_database == null || !strcontains(try(var.directory_database.host, ""), "@")
    error_message = "The directory reference must not carry credentials: put the URL in the RESIDENCY_DIRECTORY_URL secret."
  }
}

variable "dns" {
  description = "Optional DNS: a hosted zone, a global API name, and how it routes (latency or geolocation) to the regional load balancers. Null creates no records."
  type = object({
    zone_id     = string
    global_name = string
    routing     = string
  })
  default = null

  validation {
    condition     = var.dns == null || contains(["latency", "geolocation"], try(var.dns.routing, ""))
    error_message = "DNS routing is latency or geolocation."
  }
}

variable "regional_endpoints" {
  description = "Per region: the public host name from the catalogue and the load balancer it points at; for geolocation routing, the continent or country it serves."
  type = map(object({
    public_host   = string
    alb_dns_name  = string
    alb_zone_id   = string
    geo_continent = optional(string)
    geo_country   = optional(string)
  }))
  default = {}

  validation {
    condition = alltrue([
      for e in values(var.regional_endpoints) : e.geo_continent == null || e.geo_country == null
    ])
    error_message = "A region serves either a continent or a country, not both."
  }
}

variable "ephemeral" {
  description = "Emulator runs only (moto): destroy deletes a non-empty analytics bucket. Never in production."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
