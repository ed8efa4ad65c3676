# Region module: the region's PostgreSQL on RDS. A primary encrypted with the region's
# key, with automated backups (kept in the region: no cross-region backup replication),
# deletion protection and IAM database authentication, and streaming read replicas in
# the same region. The parameter group carries what the node needs: TLS only, replicas
# that report feedback and don't cancel long export reads, and query logging.

locals {
  db_family = "postgres${var.db_engine_version}"
  db_count  = var.enable_database ? 1 : 0
}

resource "aws_db_subnet_group" "region" {
  count       = local.db_count
  name        = local.name
  description = "Residency ${var.region}: private subnets of the database"
  subnet_ids  = var.database_subnet_ids
  tags        = local.tags

  lifecycle {
    precondition {
      condition     = length(var.database_subnet_ids) >= 2 && var.vpc_id != null
      error_message = "The database needs vpc_id and private subnets in at least two availability zones (database_subnet_ids)."
    }
  }
}

# Nodes and the export reach the database by membership of this group.
resource "aws_security_group" "database_client" {
  #checkov:skip=CKV2_AWS_5:attached to the node and export tasks by the region_compute module (its security_group_ids input)
  count       = local.db_count
  name        = "${local.name}-database-client"
  description = "Residency ${var.region}: members may connect to the region database"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_security_group" "database" {
  count       = local.db_count
  name        = "${local.name}-database"
  description = "Residency ${var.region}: the region database, reachable from its clients only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "database_from_clients" {
  count                        = local.db_count
  security_group_id            = aws_security_group.database[0].id
  description                  = "PostgreSQL from the region's database clients"
  ip_protocol                  = "tcp"
  from_port                    = var.database.primary.port
  to_port                      = var.database.primary.port
  referenced_security_group_id = aws_security_group.database_client[0].id
}

resource "aws_vpc_security_group_egress_rule" "client_to_database" {
  count                        = local.db_count
  security_group_id            = aws_security_group.database_client[0].id
  description                  = "PostgreSQL to the region database"
  ip_protocol                  = "tcp"
  from_port                    = var.database.primary.port
  to_port                      = var.database.primary.port
  referenced_security_group_id = aws_security_group.database[0].id
}

resource "aws_db_parameter_group" "region" {
  count       = local.db_count
  name        = "${local.name}-pg${var.db_engine_version}"
  family      = local.db_family
  description = "Residency ${var.region}: primary and streaming replicas"
  tags        = local.tags

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "password_encryption"
    value = "scram-sha-256"
  }
  # Replicas: report what they read so the primary keeps the rows a long export query
  # still needs, and give replay a bound instead of cancelling reads at once.
  parameter {
    name  = "hot_standby_feedback"
    value = "1"
  }
  parameter {
    name  = "max_standby_streaming_delay"
    value = "30000"
  }
  parameter {
    name  = "wal_receiver_status_interval"
    value = "1"
  }
  # Enough walsenders and slots for the replicas plus a relocation catch-up stream.
  parameter {
    name         = "max_wal_senders"
    value        = "20"
    apply_method = "pending-reboot"
  }
  parameter {
    name         = "max_replication_slots"
    value        = "20"
    apply_method = "pending-reboot"
  }
  # Commit LSNs are the consistency tokens; timestamps help explain replica lag.
  parameter {
    name         = "track_commit_timestamp"
    value        = "1"
    apply_method = "pending-reboot"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  parameter {
    name  = "log_disconnections"
    value = "1"
  }
}

resource "aws_iam_role" "rds_monitoring" {
  count = local.db_count
  name  = "${local.name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "monitoring.rds.${local.dns_suffix}" }
    }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  count      = local.db_count
  role       = aws_iam_role.rds_monitoring[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "primary" {
  count                   = local.db_count
  identifier              = var.database.primary.identifier
  engine                  = "postgres"
  engine_version          = var.db_engine_version
  instance_class          = var.db_instance_class
  db_name                 = var.database.primary.database
  port                    = var.database.primary.port
  allocated_storage       = var.db_allocated_storage_gb
  max_allocated_storage   = var.db_allocated_storage_gb * 10
  storage_type            = "gp3"
  storage_encrypted       = true
  kms_key_id              = aws_kms_key.region.arn
  multi_az                = var.db_multi_az
  db_subnet_group_name    = aws_db_subnet_group.region[0].name
  vpc_security_group_ids  = [aws_security_group.database[0].id]
  parameter_group_name    = aws_db_parameter_group.region[0].name
  publicly_accessible     = false
  deletion_protection     = true
  backup_retention_period = var.backup_retention_days
  backup_window           = "02:00-03:00"
  maintenance_window      = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot   = true
  skip_final_snapshot     = false
  # A fixed name: the final snapshot of a deliberate teardown, kept in the region.
  final_snapshot_identifier = "${var.database.primary.identifier}-final"

  username                      = "residency_admin"
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.region.arn

  iam_database_authentication_enabled   = true
  auto_minor_version_upgrade            = true
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.region.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.rds_monitoring[0].arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  tags                                  = merge(local.tags, { "residency:database" = "primary" })

  depends_on = [terraform_data.region_guard]
}

# Streaming replicas of the primary, in the same region (the variable's validations
# refuse any other region), encrypted with the same regional key.
resource "aws_db_instance" "replica" {
  #checkov:skip=CKV_AWS_157:a read replica is one of several read paths; the primary is Multi-AZ and a failed replica leaves rotation (reads fall back to the primary)
  #checkov:skip=CKV_AWS_133:the region's backups are the primary's automated backups; a replica is rebuilt from the primary, not restored
  for_each = var.enable_database ? { for replica in var.database.replicas : replica.identifier => replica } : {}

  identifier             = each.key
  replicate_source_db    = aws_db_instance.primary[0].identifier
  instance_class         = var.db_instance_class
  port                   = each.value.port
  storage_encrypted      = true
  kms_key_id             = aws_kms_key.region.arn
  vpc_security_group_ids = [aws_security_group.database[0].id]
  parameter_group_name   = aws_db_parameter_group.region[0].name
  publicly_accessible    = false
  deletion_protection    = true
  copy_tags_to_snapshot  = true
  skip_final_snapshot    = true
  # A replica holds no backups of its own: the primary's are the region's backups.
  backup_retention_period = 0

  iam_database_authentication_enabled   = true
  auto_minor_version_upgrade            = true
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.region.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.rds_monitoring[0].arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  tags                                  = merge(local.tags, { "residency:database" = "replica" })
}

# The catalogue names the database hosts; after the first apply they must agree with
# what RDS created, or nodes connect elsewhere. A warning in plan names the fix.
check "catalogue_matches_database" {
  assert {
    condition = !var.enable_database || alltrue(concat(
      [for primary in aws_db_instance.primary : primary.address == var.database.primary.host],
      [for replica in var.database.replicas : try(aws_db_instance.replica[replica.identifier].address == replica.host, true)],
    ))
    error_message = "The RDS endpoints differ from the hosts in regions/${var.region}.toml: copy the database_endpoints output into the catalogue and regenerate regions.auto.tfvars.json."
  }
}
