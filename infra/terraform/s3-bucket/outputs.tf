output "bucket_name" {
  description = "Name of the narration bucket."
  value       = aws_s3_bucket.narration.id
}

output "bucket_arn" {
  description = "ARN of the narration bucket."
  value       = aws_s3_bucket.narration.arn
}

output "store_url" {
  description = "narro's --store value for this bucket and prefix."
  value       = "s3://${aws_s3_bucket.narration.id}/${var.narration_prefix}"
}

output "kms_key_arn" {
  description = "KMS key that encrypts the bucket's objects."
  value       = local.kms_key_arn
}

output "worker_policy_arn" {
  description = "ARN of the least-privilege IAM policy for narro's workers; attach it to their role."
  value       = aws_iam_policy.worker.arn
}

output "worker_policy_json" {
  description = "The worker policy document, as infra/iam/worker-policy.json with the values filled in."
  value       = data.aws_iam_policy_document.worker.json
}
