"""UploadWorker: UploadQueue (S3 ObjectCreated notifications) → process_upload, one call per
object `uploads/<upload id>/<filename>`, its task id the upload id.

Also accepts a direct S3 event, as `sam local invoke` passes it.
"""

from example_app.uploads.tasks import process_upload
from offload.worker import s3_objects, sqs_handler

handler = sqs_handler("uploads", source=s3_objects(task=process_upload))
