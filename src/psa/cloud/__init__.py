"""AWS SageMaker scale-out: launch the grid as training jobs, then collect results, logs and costs.

Commands: runner (launch), results (S3 outputs -> results dir), logs (CloudWatch download and
per-loop tables), cost, storage. Shared parts: settings (.env, environment, flags), aws (clients
with botocore's retries, one-line errors), grid (jobs and their names), sourcedir (the job's
source archive), jobs and listing (finding jobs and objects), cloudwatch and logparse. ``entry``
is what runs inside a job; it imports neither boto3 nor python-dotenv.
"""
