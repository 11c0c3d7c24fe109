variable "identifier" {
  type        = string
  description = "RDS instance identifier (also names its subnet group, parameter group and security group)."
}

variable "database_name" {
  type        = string
  description = "Database MLflow uses as its backend store (deploy/mlflow's ConfigMap db-name)."
}

variable "master_username" {
  type        = string
  description = "Master user; its password is generated and kept by RDS in Secrets Manager, never in Terraform state."
}

variable "engine_version" {
  type        = string
  description = "PostgreSQL version."
}

variable "instance_class" {
  type        = string
  description = "RDS instance class."
}

variable "allocated_storage_gb" {
  type        = number
  description = "Initial storage in GiB (autoscaling up to 4x)."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the database."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets of the DB subnet group (two or more AZs)."
}

variable "client_security_group_ids" {
  type        = list(string)
  description = "Security groups allowed to connect on 5432."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key for storage, Performance Insights and the master-user secret."
}
