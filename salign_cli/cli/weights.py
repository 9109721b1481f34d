"""`salign weights ...`: list, download, inspect, import and publish model bundles.

Parsing and rendering only; the work is in :mod:`salign_cli.bundles`. ``list`` and
``download`` do not import torch; commands that parse a contract do (its typed sections).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from salign_cli.cli.common import console, err_console, new_app

if TYPE_CHECKING:
    from salign_cli.bundles.registry import RegistryEntry
    from salign_cli.bundles.spec import ResolvedBundle

weights_app = new_app(
    help="List, download, inspect, import and publish model bundles.", no_args_is_help=True
)

ModelArgument = Annotated[
    str,
    typer.Argument(
        help="A registry name (salign weights list), org/name, org/name@revision "
        "(tag, branch or 40-hex commit), or a bundle folder.",
        show_default=False,
    ),
]


def _note(message: str) -> None:
    err_console.print(f"[yellow]note:[/] {escape(message)}", soft_wrap=True)


def _status(entry: RegistryEntry) -> str:
    if entry.bundled_folder is not None:
        return "[green]ships with salign[/] (offline)"
    if not entry.published:
        return "[yellow]not published yet[/]"
    return f"@{str(entry.revision)[:12]}"


@weights_app.command("list")
def list_bundles() -> None:
    """Show the named bundles in salign's registry and the bundles already in the Hub cache.

    Example: salign weights list
    """
    from salign_cli.bundles.cache import cached_bundles
    from salign_cli.bundles.hub_paths import hub_cache_dir
    from salign_cli.bundles.registry import load_registry

    registry = load_registry()
    cached = cached_bundles()
    cached_commits = {(c.repo_id, c.commit) for c in cached if c.complete}
    table = Table(title=f"registry ({registry.path})")
    table.add_column("name", no_wrap=True)
    table.add_column("what")
    table.add_column("status", no_wrap=True)
    table.add_column("cached", no_wrap=True)
    for entry in registry.entries.values():
        classes = ", ".join(v for k, v in entry.classes.items() if k != "0")
        what = f"{entry.modality} {entry.kind}" + (f": {classes}" if classes else "")
        is_cached = (entry.repo_id, entry.revision) in cached_commits
        table.add_row(entry.name, escape(what), _status(entry), "yes" if is_cached else "-")
    console.print(table)
    cache_table = Table(title=f"cached bundles ({hub_cache_dir()})")
    for column in ("repo", "commit", "refs", "complete"):
        cache_table.add_column(column, no_wrap=column in ("repo", "commit"))
    for bundle in cached:
        cache_table.add_row(
            bundle.repo_id,
            bundle.commit[:12],
            ", ".join(bundle.refs) or "-",
            "yes" if bundle.complete else "contract only",
        )
    console.print(cache_table if cached else "no salign bundles in the Hub cache yet")


def _describe(resolved: ResolvedBundle) -> str:
    if resolved.source == "local":
        return str(resolved.folder)
    return f"{resolved.repo_id}@{resolved.revision} (commit {resolved.commit}) in {resolved.folder}"


@weights_app.command("download")
def download(
    model: ModelArgument,
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
) -> None:
    """Fetch a bundle into the Hub cache now, so later runs work offline (HF_HUB_OFFLINE=1).

    Honours HF_HOME / HF_HUB_CACHE, HF_ENDPOINT and HF_TOKEN.

    Example: salign weights download salign/sal-unet2d-hippocampus
    """
    from salign_cli.bundles.resolve import open_bundle

    resolved = open_bundle(model, force=force, notify=_note)
    verb = {"hub": "downloaded", "cache": "already cached:", "local": "local folder:"}[
        resolved.source
    ]
    console.print(f"[green]{verb}[/] {escape(_describe(resolved))}")


def _registry_only(entry: RegistryEntry) -> None:
    """Show what the registry knows about an entry that has no downloadable bundle."""
    table = Table(title=entry.name, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in (
        ("status", _status(entry)),
        ("repo", entry.repo_id),
        ("kind", entry.kind),
        ("modality", entry.modality),
        ("classes", escape(json.dumps(entry.classes))),
        ("description", escape(entry.description)),
    ):
        table.add_row(field, value)
    console.print(table)


@weights_app.command("info")
def info(
    model: ModelArgument,
    as_json: bool = typer.Option(False, "--json", help="Print salign.json as JSON only."),
) -> None:
    """Print a bundle's contract (salign.json) and check its weights if they are present.

    Fetches only salign.json when the bundle is not cached.

    Example: salign weights info org/name@v1 --json
    """
    from salign_cli.bundles.files import read_contract, verify_weights
    from salign_cli.bundles.layout import WEIGHTS_FILE
    from salign_cli.bundles.registry import load_registry
    from salign_cli.bundles.resolve import open_bundle

    entry = load_registry().get(model)
    if entry is not None and not entry.published:
        _registry_only(entry)
        return
    resolved = open_bundle(model, contract_only=True, notify=_note)
    contract = read_contract(resolved.folder)
    if as_json:
        console.print_json(json.dumps(contract.to_dict()))
        return
    has_weights = (resolved.folder / WEIGHTS_FILE).is_file()
    if has_weights:
        verify_weights(resolved.folder, contract, None if resolved.source == "local" else model)
    table = Table(title=escape(_describe(resolved)), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field, value in contract.to_dict().items():
        shown = value if isinstance(value, str) else json.dumps(value)
        table.add_row(field, escape(str(shown)))
    weights_state = "sha256 verified" if has_weights else "not downloaded (salign weights download)"
    table.add_row("weights", weights_state)
    console.print(table)


@weights_app.command("import")
def import_folder(
    folder: Annotated[
        Path, typer.Argument(help="A bundle folder carried in (e.g. on a USB stick).")
    ],
    as_spec: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option(
            "--as",
            help="File it as org/name@<40-hex commit>; default: the published registry entry "
            "whose sha256 matches its weights.",
        ),
    ] = None,
) -> None:
    """Copy a bundle folder into the Hub cache so --model NAME works offline.

    Example: salign weights import /media/usb/sal-unet2d-hippocampus
    """
    from salign_cli.bundles.cache import import_bundle

    resolved = import_bundle(folder, as_spec)
    console.print(f"[green]imported[/] {escape(_describe(resolved))}")
    console.print(
        "use it offline: HF_HUB_OFFLINE=1 salign segment SCAN "
        f"--model {resolved.repo_id}@{resolved.commit}"
    )


@weights_app.command("push")
def push(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (its bundle/) or a bundle folder.")],
    repo: Annotated[str, typer.Argument(help="Hub repo id, org/name (created if missing).")],
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    revision: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--revision", help="Tag to create on the uploaded commit, e.g. v1."),
    ] = None,
    card: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--card", help="Model card to upload instead of the bundle's README.md."),
    ] = None,
) -> None:
    """Upload a verified bundle (weights, salign.json, card) to the Hub as one commit.

    Needs a write token (HF_TOKEN or hf auth login). Prints the registry entry to pin it.

    Example: salign weights push runs/finetune-20250101-120000 myorg/hippocampus --revision v1
    """
    from salign_cli.bundles.hub import push_bundle

    result = push_bundle(run_dir, repo, private=private, tag=revision, card=card)
    tag = f" (tag {result.tag})" if result.tag else ""
    console.print(f"[green]pushed[/] {result.repo_id} commit {result.commit}{tag}")
    console.print("registry entry (salign_cli/_weights/registry.json):")
    console.print_json(json.dumps({"<name>": result.registry_entry}))
