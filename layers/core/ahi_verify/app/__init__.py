"""The event-driven application: the glue between the Lambda event sources, AWS services and the core.

``settings``       typed configuration, validated at cold start
``observability``  the one Logger, Metrics and Tracer
``events``         trigger events (S3, EventBridge, schedule) -> jobs to verify
``pipeline``       job -> work items -> verified parts -> report and alert, exactly once per job
``progress``       DynamoDB: job progress, item completion ledger, finalisation claim
``storage``        S3: job header, per-item parts, reports
``messaging``      SQS work queue and SNS alerts
"""
