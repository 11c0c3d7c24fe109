output "address" {
  description = "Private DNS name of the database (deploy/mlflow's ConfigMap db-host)."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "Postgres port (deploy/mlflow's ConfigMap db-port)."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "Backend-store database (deploy/mlflow's ConfigMap db-name)."
  value       = aws_db_instance.this.db_name
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret with the generated master credentials (source of the autotrader-mlflow-db Secret)."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "security_group_id" {
  description = "Security group of the database."
  value       = aws_security_group.this.id
}
