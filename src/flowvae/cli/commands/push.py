"""``flowvae push RUN --repo-id USER/NAME``: upload a run's model to the Hugging Face Hub
(:func:`flowvae.hub.push_to_hub`; docs/commands/push.md)."""

from __future__ import annotations

import argparse

from ..common import emit
from ..parser import Subparsers, license_option, output_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "push"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae push``: its flags and defaults."""
    p = sub.add_parser(NAME, help="upload a run's model to the Hugging Face Hub",
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
    license_option(p)
    output_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae push`` (:func:`flowvae.hub.push_to_hub`). Returns 0."""
    from ...hub import push_to_hub

    res = push_to_hub(args.run, args.repo_id, private=True if args.private else None, revision=args.revision,
                      license=args.license)
    emit(args, res, [f"pushed {', '.join(res['files'])} to https://huggingface.co/{res['repo_id']} "
                     f"(revision {res['revision']})", f"commit: {res['commit_url']}",
                     f"load it with flowvae.from_pretrained({res['repo_id']!r})"])
    return 0
