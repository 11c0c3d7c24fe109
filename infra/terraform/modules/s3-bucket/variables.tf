variable "name" {
  type        = string
  description = "Bucket name (globally unique)."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key encrypting every object (SSE-KMS, bucket key on)."
}

variable "access_log_bucket" {
  type        = string
  description = "Bucket receiving this bucket's server access logs."
}

variable "infrequent_access_days" {
  type        = number
  description = "Days after which current objects move to STANDARD_IA."
}

variable "glacier_days" {
  type        = number
  description = "Days after which current objects move to GLACIER_IR (instant retrieval: still readable by DVC or MLflow without a restore)."
}

variable "noncurrent_expiration_days" {
  type        = number
  description = "Days a superseded object version is kept before it is deleted."
}

variable "notification_topic_arn" {
  type        = string
  description = "SNS topic told about object deletions (a deleted DVC or archive object is never expected)."
}
