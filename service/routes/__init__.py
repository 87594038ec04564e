"""One module per resource; `ROUTE_HANDLERS` lists what the app mounts."""

from service.routes import datasets, health, jobs, pages, reports, runs
from service.routes import compare, openai
from service.routes import evals
from service.routes import arena, arena_pages, battles, judging, leaderboard, reviewers

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
    evals.create_eval,
    evals.list_evals,
    evals.get_eval,
    evals.candidate_evals,
    evals.eval_page,
    pages.runs_page,
    pages.run_page,
    reports.create_report,
    reports.list_reports,
    reports.get_report,
    reports.report_page,
    openai.list_models,
    openai.get_model,
    openai.chat_completions,
    openai.completions,
    compare.compare_candidates,
    battles.create_battle, battles.export_battles, battles.import_battles, battles.get_battle, battles.vote,
    leaderboard.get_leaderboard, leaderboard.leaderboard_status,
    reviewers.create_invite, reviewers.list_reviewers, reviewers.exclude_reviewer, reviewers.include_reviewer,
    reviewers.revoke_invites,
    arena.arena_state, arena.active_models, arena.set_active, arena.add_prompts, judging.start_judge, judging.list_judge_jobs,
    arena_pages.arena_page, arena_pages.arena_own_prompt, arena_pages.arena_vote_form, arena_pages.leaderboard_page,
]
