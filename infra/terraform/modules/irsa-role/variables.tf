variable "name" {
  type        = string
  description = "IAM role name (the ServiceAccounts' eks.amazonaws.com/role-arn annotation names it)."
}

variable "oidc_provider_arn" {
  type        = string
  description = "ARN of the EKS cluster's IAM OIDC provider."
}

variable "oidc_issuer_url" {
  type        = string
  description = "The EKS cluster's OIDC issuer URL."
}

variable "service_accounts" {
  type        = list(string)
  description = "The Kubernetes ServiceAccounts, as namespace/name, that may assume the role (and no other)."
}

variable "policy_json" {
  type        = string
  description = "The role's only permissions: an IAM policy document (JSON) naming exact resources."
}
