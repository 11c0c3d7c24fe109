output "arn" {
  description = "Role ARN, for the ServiceAccounts' eks.amazonaws.com/role-arn annotation."
  value       = aws_iam_role.this.arn
}

output "name" {
  description = "Role name."
  value       = aws_iam_role.this.name
}
