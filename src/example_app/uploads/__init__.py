"""Uploaded data files: validate the upload request, then stream, clean, summarise and rewrite
the file. Pure logic: no boto3 here (S3 access lives in offload.aws.uploads_s3)."""
