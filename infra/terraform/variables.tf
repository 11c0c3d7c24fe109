variable "region" {
  type        = string
  description = "AWS region of the buckets, the database and the roles (the EKS cluster's region)."
  default     = "eu-west-1"
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every bucket and role name. The manifests and params use the default names (autotrader-dvc, autotrader-archive, autotrader-mlflow-artifacts, autotrader-<workload>): change them together (tests/test_infra_terraform.py checks they agree)."
  default     = "autotrader"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,40}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-42 lowercase letters, digits or dashes (it starts S3 bucket names)."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource (the provider's default_tags)."
  default     = {}
}

variable "eks_oidc_provider_arn" {
  type        = string
  description = "ARN of the EKS cluster's IAM OIDC provider (aws_iam_openid_connect_provider), trusted by the IRSA roles."
}

variable "eks_oidc_issuer_url" {
  type        = string
  description = "The EKS cluster's OIDC issuer URL (https://oidc.eks.<region>.amazonaws.com/id/<id>); its host/path prefixes the trust conditions."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the EKS cluster: the database lives in it, reachable only from the cluster."
}

variable "database_subnet_ids" {
  type        = list(string)
  description = "Private subnets (two or more availability zones) for the MLflow database; never public subnets."

  validation {
    condition     = length(var.database_subnet_ids) >= 2
    error_message = "RDS needs subnets in at least two availability zones."
  }
}

variable "database_client_security_group_ids" {
  type        = list(string)
  description = "Security groups allowed to reach Postgres on 5432: the EKS nodes' (or the MLflow pods' security group for pods)."
}

variable "database_instance_class" {
  type        = string
  description = "RDS instance class of the MLflow database."
  default     = "db.t4g.medium"
}

variable "database_allocated_storage_gb" {
  type        = number
  description = "Initial storage of the MLflow database in GiB; storage autoscaling may grow it to 4x."
  default     = 20
}

variable "postgres_engine_version" {
  type        = string
  description = "PostgreSQL major.minor version of the MLflow database (minor upgrades are applied automatically)."
  default     = "16.4"
}

variable "lifecycle_days" {
  type = object({
    dvc_infrequent_access     = number
    dvc_glacier               = number
    archive_infrequent_access = number
    archive_glacier           = number
    mlflow_infrequent_access  = number
    mlflow_glacier            = number
    noncurrent_expiration     = number
    access_logs_expiration    = number
  })
  description = "Days after which objects move to STANDARD_IA, then to GLACIER_IR (instant retrieval: DVC and MLflow may still read old objects); how long superseded versions and access logs are kept."
  default = {
    dvc_infrequent_access     = 30
    dvc_glacier               = 180
    archive_infrequent_access = 30
    archive_glacier           = 90
    mlflow_infrequent_access  = 60
    mlflow_glacier            = 365
    noncurrent_expiration     = 365
    access_logs_expiration    = 400
  }
}
