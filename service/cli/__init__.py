"""The `arena` command line.

Commands are loaded lazily (importing torch for `arena --help` would cost seconds):
`COMMANDS` maps each command name to the module and attribute that define it, and
the one-line description `arena --help` shows. Add a command by adding a module
under `service/cli/` and one line here.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

# name -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("service.cli.demo", "demo_cmd", "Run the whole curation loop on synthetic data with planted defects, offline."),
    "config": ("service.cli.core", "config_cmd", "Print the effective settings (ARENA_* and REDIS_URL)."),
    "serve": ("service.cli.core", "serve_cmd", "Run the HTTP service (and, by default in embedded mode, a worker)."),
    "worker": ("service.cli.core", "worker_cmd", "Run a job worker on the queue."),
    "jobs": ("service.cli.core", "jobs_cmd", "List, show and cancel jobs."),
    "server": ("service.cli.core", "server_cmd", "Status of the data dir's embedded Redis server, or stop it."),
    "data": ("service.cli.data", "data_cmd", "Add, list, show, split and check datasets."),
    "base": ("service.cli.models", "base_cmd", "Register base models, or build the offline tiny base."),
    "candidates": ("service.cli.models", "candidates_cmd", "List candidates (trained adapters) with lineage and metrics."),
    "adapters": ("service.cli.models", "adapters_cmd", "The generation server's adapters: active ones loaded or not, retired ones pending unload; --sync."),
    "train": ("service.cli.train", "train_cmd", "Train a LoRA candidate (or a --sweep of them), or DPO one from an SFT candidate, as a job."),
    "runs": ("service.cli.train", "runs_cmd", "List, show and cancel training runs."),
    "eval": ("service.cli.evals", "eval_cmd", "Run a benchmark task on one or more candidates, as a job."),
    "evals": ("service.cli.evals", "evals_cmd", "List and show finished evals."),
    "check": ("service.cli.evals", "check_cmd", "Regression gate: candidate vs baseline on paired samples (exit 0/1/2)."),
    "task": ("service.cli.tasks", "task_cmd", "Derive a task from a dataset, export it for lm-eval, validate it."),
    "compare": ("service.cli.compare", "compare_cmd", "Answers of several candidates to one prompt, side by side."),
    "trace": ("service.cli.traces", "trace_cmd", "Trace failures to the training records that caused them; write the report."),
    "curate": ("service.cli.traces", "curate_cmd", "Write the next round's dataset from a report (drop flagged records, coreset)."),
    "ratings": ("service.cli.ratings", "ratings_cmd", "Leaderboard (BT + bootstrap CIs, Elo, LC win rates) and judge calibration from a battles file."),
    "prompts": ("service.cli.arena", "prompts_cmd", "The arena's prompt pool: add from a file, a dataset's held-out split or a task."),
    "activate": ("service.cli.arena", "activate_cmd", "Mark candidates as competing in the arena."),
    "deactivate": ("service.cli.arena", "deactivate_cmd", "Stop candidates from being matched in new battles."),
    "battles": ("service.cli.arena", "battles_cmd", "Export or import votes in FastChat's battle format; import also reads the public arena dumps."),
    "reviewers": ("service.cli.arena", "reviewers_cmd", "Invite reviewers, revoke their tokens; exclude (or re-include) one's votes."),
    "corrections": ("service.cli.corrections", "corrections_cmd", "Reviewers' corrected answers: list, accept or reject them."),
    "judge": ("service.cli.arena", "judge_cmd", "LLM or reference judge: candidates pairwise, both orders, as a job."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="adapter-arena")
def cli() -> None:
    """Adapter Arena: train LoRA candidates, vote on them side by side, gate regressions,
    and trace failures back to the training examples that caused them."""
    # Two busy cores and torch's default thread pool slow training by an order of magnitude.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Keep library progress bars and notices out of our output.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")


def main() -> None:
    """Console-script entry point: one-line errors, non-zero exit, no tracebacks for user errors."""
    from service.errors import ArenaError

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ArenaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
