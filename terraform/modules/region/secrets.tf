# Region module: Secrets Manager secrets of the region's nodes, one per environment
# variable the catalogue references (`{ env = "NAME" }`) plus the operator token and the
# directory URL. Terraform creates the containers only, encrypted with the region's key
# and never replicated to another region; operators put the values (docs/operations.md),
# so no secret value is ever in Terraform state.

resource "aws_secretsmanager_secret" "node" {
  #checkov:skip=CKV2_AWS_57:these are externally issued values (signing key, shared forwarding secret, tokens) rotated by the documented procedure, not by a Lambda
  for_each = local.node_secret_env_names

  name                    = "${var.name_prefix}/${var.region}/${each.value}"
  description             = "Residency ${var.region}: value of ${each.value} for the regional node"
  kms_key_id              = aws_kms_key.region.arn
  recovery_window_in_days = var.ephemeral ? 0 : 30
  tags                    = local.tags

  depends_on = [terraform_data.region_guard]
}
