# Least privilege for narro's workers, dashboard and submitters: read, write and delete objects
# under the narration prefix, list only that prefix, and use the bucket's key through S3 alone.
# infra/iam/worker-policy.json is the same policy for operators without Terraform.

data "aws_iam_policy_document" "worker" {
  # ListBucket turns "no such object" into 404 instead of 403, which narro relies on to tell a
  # clip not yet rendered from a refused read; the condition keeps other prefixes unlisted.
  statement {
    sid       = "ListNarrationPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.narration.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.narration_prefix}/*"]
    }
  }

  # DeleteObject: a re-render without captions removes the stale .vtt of an earlier take.
  statement {
    sid       = "ReadWriteNarration"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.narration.arn}/${var.narration_prefix}/*"]
  }

  # SSE-KMS: S3 asks KMS on the caller's behalf; with the bucket key the encryption context is
  # the bucket's ARN, so the key serves this bucket and nothing else.
  statement {
    sid       = "UseBucketKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${split(":", local.kms_key_arn)[3]}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:aws:s3:arn"
      values   = [aws_s3_bucket.narration.arn]
    }
  }
}

resource "aws_iam_policy" "worker" {
  name        = "${var.bucket_name}-narro-worker"
  description = "narro workers: read/write s3://${var.bucket_name}/${var.narration_prefix}/ only"
  policy      = data.aws_iam_policy_document.worker.json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "worker" {
  count = var.worker_role_name == null ? 0 : 1

  role       = var.worker_role_name
  policy_arn = aws_iam_policy.worker.arn
}
