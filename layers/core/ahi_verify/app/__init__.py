"""The event-driven application: the glue between the Lambda event sources, AWS services and the core.

``settings``       typed configuration, validated at cold start
``observability``  the one Logger, Metrics and Tracer
``wiring``         the one place AWS clients are created
``events``         trigger events (S3, EventBridge, schedule) -> jobs to verify
``trigger``        job -> plan stored, work items queued (no codecs needed)
``worker``         work item -> part stored and counted once (or handed on before the deadline)
``dead_letters``   a dead-lettered work item -> recorded as not verified, so the job still completes
``finaliser``      the last part -> report and alert, exactly once per job
``progress``       DynamoDB: job progress, item completion ledger, finalisation claim
``storage``        S3: plan, per-item parts, reports
``messaging``      SQS work queue and SNS alerts
"""
