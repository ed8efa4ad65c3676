# Region module: inputs. Most come straight from one entry of the catalogue
# (`regions/<id>.toml`) through the generated `regions.auto.tfvars.json`; the validations
# here are the residency rules, so a wrong input fails in `plan`, not in an audit.

variable "region" {
  description = "The region id from the catalogue; also the AWS region of the provider passed in."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "The region must be an AWS region id such as eu-west-1."
  }

  validation {
    condition     = contains(keys(local.region_jurisdictions), var.region)
    error_message = "Unknown region: add it to local.region_jurisdictions (terraform/modules/region/main.tf) with its jurisdiction first."
  }
}

variable "jurisdiction" {
  description = "The region's jurisdiction code from the catalogue (EU, UK, CH, US, CA, SG, AU, JP, IN, BR)."
  type        = string

  validation {
    condition     = contains(["EU", "UK", "CH", "US", "CA", "SG", "AU", "JP", "IN", "BR"], var.jurisdiction)
    error_message = "Unknown jurisdiction: expected one of EU, UK, CH, US, CA, SG, AU, JP, IN, BR (the catalogue's list)."
  }

  validation {
    condition     = lookup(local.region_jurisdictions, var.region, var.jurisdiction) == var.jurisdiction
    error_message = "The region's AWS location is not in the jurisdiction the catalogue gives it."
  }
}

variable "name_prefix" {
  description = "Prefix of resource names (roles, groups, secrets)."
  type        = string
  default     = "residency"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name_prefix))
    error_message = "The name prefix must be 2-21 lowercase letters, digits or dashes."
  }
}

variable "kms_key_alias" {
  description = "The region's KMS key alias from the catalogue (`kms.key`), e.g. alias/residency-eu-west-1."
  type        = string

  validation {
    condition     = can(regex("^alias/[A-Za-z0-9/_-]+$", var.kms_key_alias)) && !startswith(var.kms_key_alias, "alias/aws/")
    error_message = "The KMS key must be named by an alias (alias/...) outside the reserved alias/aws/ namespace."
  }
}

variable "data_bucket" {
  description = "The region's data bucket (`storage.data_bucket`): envelope-encrypted tenant files."
  type        = string
}

variable "audit_bucket" {
  description = "The region's audit bucket (`storage.audit_bucket`): write-once audit exports."
  type        = string
}

variable "analytics" {
  description = "Where the region's anonymized export goes (`analytics`): the global bucket and this region's prefix."
  type = object({
    bucket = string
    prefix = string
  })

  validation {
    condition     = !startswith(var.analytics.prefix, "/")
    error_message = "The analytics prefix must be relative (no leading /)."
  }
}

variable "analytics_kms_key_arn" {
  description = "The analytics bucket's KMS key (global module output); the export role may encrypt with it through S3 only. Null when the analytics bucket is not managed here."
  type        = string
  default     = null
}

variable "database" {
  description = "The region's PostgreSQL primary and read replicas (`database`). Identifiers are the first DNS label of the catalogue's RDS hosts."
  type = object({
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

  validation {
    condition     = length(var.database.replicas) >= 1
    error_message = "A region needs at least one read replica."
  }

  validation {
    condition     = var.database.primary.region == var.region
    error_message = "The database primary must be in the module's own region."
  }

  # Residency: a replica is a full copy of tenant data. One outside the region's
  # jurisdiction is refused whatever else is right about it.
  validation {
    condition = alltrue([
      for replica in var.database.replicas :
      lookup(local.region_jurisdictions, replica.region, "unknown") == var.jurisdiction
    ])
    error_message = "A read replica is outside the region's jurisdiction (or in an unknown region): residency forbids copies of tenant data leaving the jurisdiction."
  }

  validation {
    condition     = alltrue([for replica in var.database.replicas : replica.region == var.region])
    error_message = "A read replica must be in the module's own region: streaming replicas are created with the region's provider only."
  }

  validation {
    condition = alltrue([
      for id in concat([var.database.primary.identifier], var.database.replicas[*].identifier) :
      can(regex("^[a-z][a-z0-9-]{0,62}$", id)) && !endswith(id, "-") && !strcontains(id, "--")
    ])
    error_message = "Database identifiers must be valid RDS identifiers (lowercase letters, digits, single dashes)."
  }
}

variable "secret_env_names" {
  description = "Environment variables the catalogue names as secret references (`{ env = NAME }`); each becomes a Secrets Manager secret of the region."
  type        = set(string)

  validation {
    condition     = alltrue([for name in var.secret_env_names : can(regex("^[A-Z_][A-Z0-9_]*$", name))])
    error_message = "Secret references must be environment variable names (A-Z, 0-9, _)."
  }
}

variable "enable_database" {
  description = "Create the RDS primary, replicas and their network pieces. Off only for emulator runs (moto) that cover KMS, S3 and IAM."
  type        = bool
  default     = true
}

variable "vpc_id" {
  description = "VPC of the region's database and nodes. Required when enable_database is true."
  type        = string
  default     = null
}

variable "database_subnet_ids" {
  description = "Private subnets (at least two availability zones) for the database."
  type        = list(string)
  default     = []
}

variable "db_instance_class" {
  description = "Instance class of the primary and replicas."
  type        = string
  default     = "db.r6g.large"
}

variable "db_engine_version" {
  description = "PostgreSQL major version; the parameter group family follows it."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^1[4-9]$", var.db_engine_version))
    error_message = "The engine version is a PostgreSQL major version, 14 or later (the app needs pg_last_wal_replay_lsn and scram)."
  }
}

variable "db_allocated_storage_gb" {
  description = "Initial storage of the primary (GiB); storage autoscaling grows it up to 10x."
  type        = number
  default     = 100
}

variable "db_multi_az" {
  description = "Multi-AZ primary (a standby in another availability zone of the same region)."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Automated backup retention of the primary. Backups stay in the region: no cross-region backup replication is ever configured."
  type        = number
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 7 && var.backup_retention_days <= 35
    error_message = "Backup retention must be between 7 and 35 days."
  }
}

variable "audit_retention_days" {
  description = "Object Lock (compliance mode) retention of the audit bucket, in days."
  type        = number
  default     = 2557

  validation {
    condition     = var.audit_retention_days >= 1
    error_message = "Audit retention must be at least one day."
  }
}

variable "key_admin_arns" {
  description = "Principals that administer (not use) the region's KMS key. Empty means the account root, i.e. IAM policies of the account decide."
  type        = list(string)
  default     = []
}

variable "key_deletion_window_days" {
  description = "Waiting period before a scheduled KMS key deletion takes effect."
  type        = number
  default     = 30

  validation {
    condition     = var.key_deletion_window_days >= 7 && var.key_deletion_window_days <= 30
    error_message = "The KMS deletion window must be between 7 and 30 days."
  }
}

variable "ephemeral" {
  description = "Emulator runs only (moto): `destroy` deletes non-empty buckets and secrets without a recovery window. Never in a real region."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "export_db_user" {
  description = "The read-only PostgreSQL user of the analytics export (IAM database authentication)."
  type        = string
  default     = "residency_export"
}

variable "image_repository" {
  description = "Name of the region's container registry repository the nodes pull from."
  type        = string
  default     = "residency"
}
