"""One module per resource; `ROUTE_HANDLERS` lists what the app mounts."""

from service.routes import datasets, health, jobs

ROUTE_HANDLERS = [
    health.health,
    datasets.add_dataset,
    datasets.list_datasets,
    datasets.show_dataset,
    datasets.dataset_records,
    datasets.split_dataset,
    jobs.list_jobs,
    jobs.get_job,
    jobs.cancel_job,
    jobs.job_events,
]
