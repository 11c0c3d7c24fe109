# AutoTrader's AWS side: the data buckets (DVC remote, archive, MLflow artifacts), the IAM roles of the
# Kubernetes workloads (IRSA, least privilege per workload) and PostgreSQL for MLflow.
#
# The names here are the names the manifests use (deploy/pipelines, deploy/mlflow, rollouts/base):
# tests/test_infra_terraform.py reads both and fails when they drift apart.

data "aws_caller_identity" "current" {}

locals {
  buckets = {
    dvc         = "${var.name_prefix}-dvc"
    archive     = "${var.name_prefix}-archive"
    mlflow      = "${var.name_prefix}-mlflow-artifacts"
    access_logs = "${var.name_prefix}-access-logs"
  }

  # Which ServiceAccounts (namespace/name) assume which role.
  workloads = {
    pipeline = ["autotrader-pipelines/autotrader-pipeline"]
    deployer = ["autotrader-pipelines/autotrader-deployer"]
    serving  = ["autotrader-staging/autotrader-serving", "autotrader-production/autotrader-serving"]
    mlflow   = ["mlflow/mlflow"]
  }

  mlflow_database_name    = "mlflow"
  mlflow_artifacts_prefix = "mlartifacts"
  account_id              = data.aws_caller_identity.current.account_id
}

# --- encryption key and deletion alerts ---------------------------------------------------------------------

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; the account root statement is what lets IAM policies (the IRSA roles') grant use of the key at all.
  #checkov:skip=CKV_AWS_111:Same key-policy semantics: "*" is this key, not every resource.
  #checkov:skip=CKV_AWS_356:Same key-policy semantics: "*" is this key, not every resource.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${local.account_id}:root"]
    }
  }
  statement {
    sid       = "S3PublishesEncryptedNotifications"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_kms_key" "data" {
  description             = "AutoTrader data: buckets, MLflow database, notifications"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.name_prefix}-data"
  target_key_id = aws_kms_key.data.key_id
}

resource "aws_sns_topic" "deletions" {
  name              = "${var.name_prefix}-object-deletions"
  kms_master_key_id = aws_kms_key.data.arn
}

data "aws_iam_policy_document" "deletions" {
  statement {
    sid       = "S3Publishes"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.deletions.arn]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [for name in values(local.buckets) : "arn:aws:s3:::${name}"]
    }
  }
}

resource "aws_sns_topic_policy" "deletions" {
  arn    = aws_sns_topic.deletions.arn
  policy = data.aws_iam_policy_document.deletions.json
}

# --- buckets ---------------------------------------------------------------------------------------------------

# Server access logs of the three data buckets. S3 log delivery writes only to SSE-S3 buckets.
resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log target; logging it into itself would loop and another log bucket would only move the question.
  #checkov:skip=CKV_AWS_145:S3 server access log delivery requires SSE-S3 (AES256) on the target bucket; SSE-KMS is not supported there.
  #checkov:skip=CKV_AWS_144:Access logs are audit copies with a fixed retention; replicating them cross-region is not required.
  bucket = local.buckets.access_logs
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}
    transition {
      days          = 30
      storage_class = "STANDARD_IA"
    }
    expiration {
      days = var.lifecycle_days.access_logs_expiration
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
  depends_on = [aws_s3_bucket_versioning.access_logs]
}

resource "aws_s3_bucket_notification" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  topic {
    topic_arn = aws_sns_topic.deletions.arn
    events    = ["s3:ObjectRemoved:Delete", "s3:ObjectRemoved:DeleteMarkerCreated"]
  }
  depends_on = [aws_sns_topic_policy.deletions]
}

data "aws_iam_policy_document" "access_logs" {
  statement {
    sid       = "S3LogDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.access_logs.arn, "${aws_s3_bucket.access_logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket     = aws_s3_bucket.access_logs.id
  policy     = data.aws_iam_policy_document.access_logs.json
  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}

module "dvc_bucket" {
  source                     = "./modules/s3-bucket"
  name                       = local.buckets.dvc
  kms_key_arn                = aws_kms_key.data.arn
  access_log_bucket          = aws_s3_bucket.access_logs.id
  notification_topic_arn     = aws_sns_topic.deletions.arn
  infrequent_access_days     = var.lifecycle_days.dvc_infrequent_access
  glacier_days               = var.lifecycle_days.dvc_glacier
  noncurrent_expiration_days = var.lifecycle_days.noncurrent_expiration
}

module "archive_bucket" {
  source                     = "./modules/s3-bucket"
  name                       = local.buckets.archive
  kms_key_arn                = aws_kms_key.data.arn
  access_log_bucket          = aws_s3_bucket.access_logs.id
  notification_topic_arn     = aws_sns_topic.deletions.arn
  infrequent_access_days     = var.lifecycle_days.archive_infrequent_access
  glacier_days               = var.lifecycle_days.archive_glacier
  noncurrent_expiration_days = var.lifecycle_days.noncurrent_expiration
}

module "mlflow_bucket" {
  source                     = "./modules/s3-bucket"
  name                       = local.buckets.mlflow
  kms_key_arn                = aws_kms_key.data.arn
  access_log_bucket          = aws_s3_bucket.access_logs.id
  notification_topic_arn     = aws_sns_topic.deletions.arn
  infrequent_access_days     = var.lifecycle_days.mlflow_infrequent_access
  glacier_days               = var.lifecycle_days.mlflow_glacier
  noncurrent_expiration_days = var.lifecycle_days.noncurrent_expiration
}

# --- IAM roles for the workloads (IRSA) --------------------------------------------------------------------

# Pipeline steps: read and write the DVC remote (and Argo's artifacts under argo/ in it), add to the archive.
# No delete anywhere: the archive is write-once and versioning keeps what a replace supersedes.
data "aws_iam_policy_document" "pipeline" {
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [module.dvc_bucket.arn, module.archive_bucket.arn]
  }
  statement {
    sid       = "ReadWriteObjects"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${module.dvc_bucket.arn}/*", "${module.archive_bucket.arn}/*"]
  }
  statement {
    sid       = "UseDataKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.data.arn]
  }
}

# Deployment workflow: its model checks pull the feature store from the DVC remote; read only.
data "aws_iam_policy_document" "deployer" {
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [module.dvc_bucket.arn]
  }
  statement {
    sid       = "ReadObjects"
    actions   = ["s3:GetObject"]
    resources = ["${module.dvc_bucket.arn}/*"]
  }
  statement {
    sid       = "Decrypt"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
  }
}

# Model server: reads model artifacts when a model URI points into the artifact bucket directly
# (MLflow's proxied mlflow-artifacts:/ URIs need no S3 rights at all); read only, artifacts prefix only.
data "aws_iam_policy_document" "serving" {
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket"]
    resources = [module.mlflow_bucket.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.mlflow_artifacts_prefix}/*"]
    }
  }
  statement {
    sid       = "ReadArtifacts"
    actions   = ["s3:GetObject"]
    resources = ["${module.mlflow_bucket.arn}/${local.mlflow_artifacts_prefix}/*"]
  }
  statement {
    sid       = "Decrypt"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
  }
}

# MLflow tracking server: owns the artifact store (--artifacts-destination), so it also deletes (gc).
data "aws_iam_policy_document" "mlflow" {
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [module.mlflow_bucket.arn]
  }
  statement {
    sid       = "Artifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${module.mlflow_bucket.arn}/${local.mlflow_artifacts_prefix}/*"]
  }
  statement {
    sid       = "UseDataKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.data.arn]
  }
}

module "pipeline_role" {
  source            = "./modules/irsa-role"
  name              = "${var.name_prefix}-pipeline"
  oidc_provider_arn = var.eks_oidc_provider_arn
  oidc_issuer_url   = var.eks_oidc_issuer_url
  service_accounts  = local.workloads.pipeline
  policy_json       = data.aws_iam_policy_document.pipeline.json
}

module "deployer_role" {
  source            = "./modules/irsa-role"
  name              = "${var.name_prefix}-deployer"
  oidc_provider_arn = var.eks_oidc_provider_arn
  oidc_issuer_url   = var.eks_oidc_issuer_url
  service_accounts  = local.workloads.deployer
  policy_json       = data.aws_iam_policy_document.deployer.json
}

module "serving_role" {
  source            = "./modules/irsa-role"
  name              = "${var.name_prefix}-serving"
  oidc_provider_arn = var.eks_oidc_provider_arn
  oidc_issuer_url   = var.eks_oidc_issuer_url
  service_accounts  = local.workloads.serving
  policy_json       = data.aws_iam_policy_document.serving.json
}

module "mlflow_role" {
  source            = "./modules/irsa-role"
  name              = "${var.name_prefix}-mlflow"
  oidc_provider_arn = var.eks_oidc_provider_arn
  oidc_issuer_url   = var.eks_oidc_issuer_url
  service_accounts  = local.workloads.mlflow
  policy_json       = data.aws_iam_policy_document.mlflow.json
}

# --- PostgreSQL for MLflow -------------------------------------------------------------------------------

module "mlflow_database" {
  source                    = "./modules/mlflow-postgres"
  identifier                = "${var.name_prefix}-mlflow"
  database_name             = local.mlflow_database_name
  master_username           = "mlflow"
  engine_version            = var.postgres_engine_version
  instance_class            = var.database_instance_class
  allocated_storage_gb      = var.database_allocated_storage_gb
  vpc_id                    = var.vpc_id
  subnet_ids                = var.database_subnet_ids
  client_security_group_ids = var.database_client_security_group_ids
  kms_key_arn               = aws_kms_key.data.arn
}
