"""`arena compare`: one prompt, several candidates' answers in columns."""

from __future__ import annotations

import click

from service.cli.common import echo_json, open_store, settings
from service.compare import CompareRequest, Comparison, compare


@click.command("compare")
@click.option("--prompt", required=True, help="The user turn every candidate answers.")
@click.option("--candidates", required=True, help="Comma-separated candidate (or base) names, e.g. a,b,c.")
@click.option("--max-new-tokens", type=int, default=None, help="New tokens per answer (default 128).")
@click.option("--temperature", type=float, default=None, help="0 is greedy (the default).")
@click.option("--seed", type=int, default=None, help="Fixes a sampled answer.")
@click.option("--no-cache", is_flag=True, help="Generate again even when the answers are cached.")
@click.option("--json", "json_out", is_flag=True, help="Print the comparison as JSON.")
def compare_cmd(prompt: str, candidates: str, max_new_tokens: int | None, temperature: float | None,
                seed: int | None, no_cache: bool, json_out: bool) -> None:
    """Every candidate's answer to PROMPT, side by side.

    Generates in this process (or through ARENA_GENERATION_URL when set), on the configured
    store's candidates; answers are cached in Redis like the service's.
    """
    from service.serving import Serving

    params = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    request = CompareRequest(
        prompt=prompt,
        candidates=candidates.split(","),
        params={name: value for name, value in params.items() if value is not None},
        no_cache=no_cache,
    )
    s = settings()
    with open_store(s) as store:
        serving = Serving(s, store.store)
        try:
            # The store's coroutines run on its private loop; so must generation, which uses them.
            result: Comparison = store._run(compare(serving, request))
        finally:
            close = getattr(serving.backend, "close", None)
            if close is not None:
                close()
    if json_out:
        echo_json(result)
    else:
        print_side_by_side(result)


def print_side_by_side(result: Comparison) -> None:
    """One panel per candidate, in columns as wide as the terminal allows."""
    from rich.columns import Columns
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = Console()
    console.print(Text.assemble(("prompt: ", "bold"), result.prompt))
    width = max(24, console.width // len(result.answers) - 1)
    panels = [
        Panel(
            Text(answer.text or "(empty)", overflow="fold"),
            title=f"[bold]{answer.candidate}[/bold]",
            subtitle=f"{answer.completion_tokens} tokens, {answer.finish_reason}",
            width=width,
        )
        for answer in result.answers
    ]
    console.print(Columns(panels))
    console.print(f"{len(result.answers)} answers in {result.wall_s:.2f}s", style="dim")
