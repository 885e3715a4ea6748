"""The SageMaker library: launch the grid as training jobs, then collect results, logs and costs.

No flags and no console commands live here (those are psa.commands.sagemaker_*): aws_setup (the
AWS setup from defaults, .env and the environment), aws (clients with botocore's retries, errors
in one line), jobs (the jobs of a grid, their names, finding them), runner (launching and
relaunching), sourcedir (the job's source archive and dataset), results (S3 outputs -> a results
dir), cloudwatch and logparse (job logs and their per-loop lines), cost, storage, listing,
progress. ``entry`` is what runs inside a job; it imports neither boto3 nor python-dotenv.
"""
