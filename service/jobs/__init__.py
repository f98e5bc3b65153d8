"""The job wing: the job model, the job-manager actor, the job store and telemetry."""
