output "dvc_bucket" {
  description = "DVC remote bucket: `dvc remote add … s3://<this>/dvc`, the autotrader-dvc-remote Secret's url, and the Argo artifact repository (deploy/pipelines/artifact-repositories.yaml)."
  value       = module.dvc_bucket.name
}

output "archive_bucket" {
  description = "Archive bucket: params archive.url = s3://<this>/archive in production."
  value       = module.archive_bucket.name
}

output "mlflow_artifacts_bucket" {
  description = "MLflow artifact bucket: deploy/mlflow's artifacts-destination s3://<this>/mlartifacts."
  value       = module.mlflow_bucket.name
}

output "mlflow_artifacts_destination" {
  description = "The MLflow server's --artifacts-destination (deploy/mlflow ConfigMap artifacts-destination)."
  value       = "s3://${module.mlflow_bucket.name}/${local.mlflow_artifacts_prefix}"
}

output "access_log_bucket" {
  description = "Bucket holding the data buckets' server access logs."
  value       = aws_s3_bucket.access_logs.id
}

output "kms_key_arn" {
  description = "KMS key encrypting the buckets, the database and the deletion topic."
  value       = aws_kms_key.data.arn
}

output "object_deletion_topic_arn" {
  description = "SNS topic announcing object deletions in the data buckets (subscribe the on-call channel)."
  value       = aws_sns_topic.deletions.arn
}

output "role_arns" {
  description = "IRSA role per workload: annotate the ServiceAccounts (eks.amazonaws.com/role-arn) with these."
  value = {
    pipeline = module.pipeline_role.arn
    deployer = module.deployer_role.arn
    serving  = module.serving_role.arn
    mlflow   = module.mlflow_role.arn
  }
}

output "service_accounts" {
  description = "The namespace/name of the ServiceAccounts each role trusts (must match the manifests)."
  value       = local.workloads
}

output "mlflow_database" {
  description = "MLflow's backend store: deploy/mlflow ConfigMap db-host, db-port, db-name; the master-user secret feeds the autotrader-mlflow-db Secret."
  value = {
    host       = module.mlflow_database.address
    port       = module.mlflow_database.port
    name       = module.mlflow_database.database_name
    secret_arn = module.mlflow_database.master_user_secret_arn
  }
}
