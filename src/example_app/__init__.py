"""The example application's tasks: email, the notification log and the CSV upload pipeline.

They use the `offload` library exactly as your own app would: `@task` functions, the FastAPI
routes in `api/`, and one-line Lambda handlers in `workers/`. None of this ships in the library.
"""
