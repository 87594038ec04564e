"""`arena demo`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("arena-demo"), show_default=True,
              help="Where the demo keeps its data, report and summary (a fresh run each time).")
@click.option("--fast", is_flag=True, help="The small preset: a few minutes on 2 CPU cores.")
@click.option("--serve/--no-serve", default=True, help="Serve the arena page at the end (default: on).")
@click.option("--port", default=8000, show_default=True)
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True,
              help="zh: the whole loop in Chinese (bilingual base, Chinese data and defects, Chinese output and pages).")
def demo_cmd(out: Path, fast: bool, serve: bool, port: int, lang: str) -> None:
    """Run the whole curation loop on synthetic data with planted defects, offline."""
    import shutil

    from service.demo import Demo

    if out.exists():
        if not (out / "summary.json").exists() and any(out.iterdir()) and not (out / "data").exists():
            raise click.ClickException(f"{out} exists and is not a demo directory; pick another --out")
        shutil.rmtree(out)
    summary = Demo(out, fast=fast, serve=serve, port=port, lang=lang).run()
    if not summary.get("improved"):  # shown on the held-out split, by the exact McNemar test
        raise SystemExit(1)
