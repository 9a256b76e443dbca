variable "bucket_name" {
  description = "Name of the bucket that holds the narration (MP3s, sidecars, captions, course indexes)."
  type        = string
}

variable "narration_prefix" {
  description = "Key prefix narro writes under: the PREFIX of the store URL s3://BUCKET/PREFIX. Workers may touch nothing outside it."
  type        = string
  default     = "narration"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.narration_prefix))
    error_message = "narration_prefix must be a non-empty key prefix without leading or trailing slashes, e.g. \"narration\" or \"courses/narration\"."
  }
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the objects. Unset: the module creates one, with yearly rotation."
  type        = string
  default     = null
}

variable "noncurrent_version_expiration_days" {
  description = "Days an overwritten or deleted object version is kept before it expires (a re-render overwrites clips)."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which the parts of an unfinished multipart upload are deleted."
  type        = number
  default     = 7

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1
    error_message = "abort_incomplete_multipart_days must be at least 1."
  }
}

variable "access_log_bucket" {
  description = "Bucket that receives S3 server access logs of this bucket. Unset: no access logging."
  type        = string
  default     = null
}

variable "access_log_prefix" {
  description = "Key prefix of the access logs in access_log_bucket."
  type        = string
  default     = "s3-access/narro/"
}

variable "worker_role_name" {
  description = "IAM role of the narro workers (e.g. their IRSA role). Set: the worker policy is attached to it."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource of the module."
  type        = map(string)
  default     = {}
}
