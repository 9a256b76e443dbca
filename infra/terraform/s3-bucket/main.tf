# The bucket narro publishes narration to: versioned, KMS-encrypted, never public, TLS only.
# Objects live under var.narration_prefix; a store URL of s3://BUCKET/PREFIX points narro at it.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  kms_key_arn = var.kms_key_arn != null ? var.kms_key_arn : aws_kms_key.narration[0].arn
}

resource "aws_kms_key" "narration" {
  count = var.kms_key_arn == null ? 1 : 0

  description             = "Encrypts the narration in s3://${var.bucket_name}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms[0].json
  tags                    = var.tags
}

# The account administers its key through IAM, as with AWS's default key policy; workers get
# kms:Decrypt/GenerateDataKey from the worker policy (iam.tf), through S3 only.
data "aws_iam_policy_document" "kms" {
  count = var.kms_key_arn == null ? 1 : 0

  statement {
    sid       = "AccountAdministersKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_s3_bucket" "narration" {
  # checkov:skip=CKV_AWS_144: no cross-region replica; narration is rebuilt from the manifests, and versioning covers overwrites and deletes
  # checkov:skip=CKV2_AWS_62: nothing consumes bucket events; the catalogue records every publish
  bucket = var.bucket_name
  tags   = var.tags
}

# ACLs off: access is decided by IAM and the bucket policy alone.
resource "aws_s3_bucket_ownership_controls" "narration" {
  bucket = aws_s3_bucket.narration.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "narration" {
  bucket = aws_s3_bucket.narration.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "narration" {
  bucket = aws_s3_bucket.narration.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "narration" {
  bucket = aws_s3_bucket.narration.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = local.kms_key_arn
    }
    # One data key per bucket, not per object: far fewer KMS calls for thousands of clips.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "narration" {
  bucket = aws_s3_bucket.narration.id

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
  }

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.narration]
}

resource "aws_s3_bucket_logging" "narration" {
  count = var.access_log_bucket == null ? 0 : 1

  bucket        = aws_s3_bucket.narration.id
  target_bucket = var.access_log_bucket
  target_prefix = var.access_log_prefix
}

resource "aws_s3_bucket_policy" "narration" {
  bucket = aws_s3_bucket.narration.id
  policy = data.aws_iam_policy_document.bucket.json

  # A bucket policy put before the public access block could be refused as public.
  depends_on = [aws_s3_bucket_public_access_block.narration]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.narration.arn, "${aws_s3_bucket.narration.arn}/*"]

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

  statement {
    sid       = "DenyTlsOlderThan12"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.narration.arn, "${aws_s3_bucket.narration.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}
