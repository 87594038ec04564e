"""One module per resource; `ROUTE_HANDLERS` lists what the app mounts."""

from service.routes import datasets, health, jobs, pages, reports, runs

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
    runs.create_run,
    runs.list_runs,
    runs.get_run,
    runs.cancel_run,
    runs.run_events,
    runs.list_candidates,
    runs.get_candidate,
    runs.list_bases,
    pages.runs_page,
    pages.run_page,
    reports.create_report,
    reports.list_reports,
    reports.get_report,
    reports.report_page,
]
