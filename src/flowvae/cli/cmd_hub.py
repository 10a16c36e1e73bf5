"""``flowvae export`` and ``flowvae push``: a run's model as a shareable folder, or on the Hugging
Face Hub (:mod:`flowvae.hub`; docs/commands/export.md and push.md)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from .parser import output_options, run_argument

__all__ = ["COMMANDS", "add_parsers"]


def _license(p: argparse.ArgumentParser) -> None:
    p.add_argument("--license", default="mit", help="license id in the model card's front matter [default: mit]")


def add_parsers(sub) -> None:  # noqa: ANN001 - argparse's private _SubParsersAction
    """Add this module's subcommands to the ``flowvae`` parser."""
    p = sub.add_parser("export", help="write a run's model as a shareable folder with a model card",
                       description="Write config.yaml, model.safetensors, a README.md model card (metrics, "
                                   "probe accuracies, samples, hardware) and samples.png into a folder that "
                                   "flowvae.from_pretrained loads; no network.")
    run_argument(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (new, empty or a previous export)")
    p.add_argument("--repo-id", default=None, metavar="USER/NAME",
                   help="repository id named in the card's loading example [default: USER/NAME]")
    _license(p)
    output_options(p)

    p = sub.add_parser("push", help="upload a run's model to the Hugging Face Hub",
                       description="Upload the files of flowvae export to a Hub model repository, in one commit, "
                                   "creating the repository (and the branch) if needed. Needs huggingface_hub "
                                   "(pip install flowvae[hub]) and a token with write access (hf auth login, or "
                                   "HF_TOKEN).")
    run_argument(p)
    p.add_argument("--repo-id", required=True, metavar="USER/NAME", help="the model repository")
    p.add_argument("--private", action="store_true", help="create the repository private (an existing one keeps "
                                                           "its visibility)")
    p.add_argument("--revision", default=None, metavar="BRANCH", help="branch to commit to, created if missing "
                                                                      "[default: main]")
    _license(p)
    output_options(p)


def cmd_export(args: argparse.Namespace) -> int:
    from ..runs import load_run
    from .main import emit

    model = load_run(args.run)
    files = model.save_pretrained(args.out, repo_id=args.repo_id, license=args.license)
    emit(args, {"out": str(args.out), "files": [p.name for p in files]},
          [f"wrote {args.out}: {', '.join(p.name for p in files)}",
           f"load it with flowvae.from_pretrained({str(Path(args.out))!r})"])
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from ..hub import push_to_hub
    from .main import emit

    res = push_to_hub(args.run, args.repo_id, private=True if args.private else None, revision=args.revision,
                      license=args.license)
    emit(args, res, [f"pushed {', '.join(res['files'])} to https://huggingface.co/{res['repo_id']} "
                      f"(revision {res['revision']})", f"commit: {res['commit_url']}",
                      f"load it with flowvae.from_pretrained({res['repo_id']!r})"])
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"export": cmd_export, "push": cmd_push}
