"""``flowvae manipulate RUN --attribute CLASS``: test images edited along a class's direction of the
vector latent, the local code kept (docs/commands/manipulate.md; issue 31)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..common import command_data, emit, grid_scale, load_for_eval, output_root, write_result
from ..options import number
from ..parser import Subparsers, common_options, data_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "manipulate"

log = logging.getLogger("flowvae")


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae manipulate``: its flags and defaults."""
    p = sub.add_parser(NAME, help="edit test images along a class's direction of the global code",
                       description="Find one direction of the vector latent per class of the labelled training "
                                   "images (RUN/directions.json), then decode test images with their code moved "
                                   "along one class's direction, z + alpha * d: the flow models keep each image's "
                                   "exact local code v, so alpha 0 is the image itself. One grid row per image, "
                                   "one column per alpha.")
    run_argument(p)
    p.add_argument("--attribute", required=True, metavar="CLASS",
                   help="the class to move towards: its name (e.g. 3, cat) or label number")
    number(p, "--alpha", integer=False, nargs="+", default=[-2.0, -1.0, 0.0, 1.0, 2.0], dest="alphas",
           metavar="A", help="edit strengths, one column each, in multiples of the direction [default: -2 -1 0 1 2]")
    p.add_argument("--method", choices=["mean-difference", "classifier"], default="mean-difference",
                   help="the direction: the class's mean code minus the others' (as Glow), or the normal of a "
                        "linear classifier of the codes (as Diffusion Autoencoders) [default: mean-difference]")
    number(p, "--images", ge=0, nargs="+", default=None, dest="indices", metavar="I",
           help="test-image indices, one row each [default: the first 8 test images not of the class]")
    number(p, "--direction-images", ge=2, default=5000,
           help="labelled training images the directions come from (a seeded subset) [default: 5000]")
    p.add_argument("--curves", action="store_true",
                   help="also measure every class's direction: the share of edited test images of other classes "
                        "that a linear classifier of pixels assigns to the target class, per alpha")
    number(p, "--curve-images", ge=1, default=20,
           help="with --curves: test images edited per class [default: 20]")
    p.add_argument("--out", default=None, help="PNG file [default: RUN/manipulate.png]")
    data_options(p, split=False)
    common_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae manipulate``: the directions (:func:`flowvae.evaluation.manipulation.label_directions`,
    saved as ``directions.json``), the grid (:func:`~flowvae.evaluation.manipulation.manipulation_grid`)
    and ``manipulation.json``. Returns 0, or 1 when the alpha-0 column of an exact kind did not
    reproduce the images."""
    from ...errors import DataError
    from ...evaluation.manipulation import class_curves, find_direction, label_directions, manipulation_grid
    from ...imaging import save_grid
    from ...runs.records import ManipulationResult

    model, _, seed = load_for_eval(args, "vector_latent")
    train = command_data(args, model, "train", args.direction_images)
    directions = label_directions(model, train, args.method, args.direction_images, seed)
    path = write_result(args.run, directions)
    c, direction = find_direction(directions, args.attribute)
    test = command_data(args, model, "test")
    indices = args.indices
    if indices is None:
        if test.labels is None:
            raise DataError(f"{test.name} has no labels; name the images to edit with --images")
        others = (test.labels != directions.labels[c]).nonzero().flatten()
        indices = others[:8].tolist()
    grid, info = manipulation_grid(model, test, indices, direction, args.alphas)
    out = Path(args.out) if args.out else Path(args.run) / "manipulate.png"
    save_grid(grid.flatten(0, 1), out, nrow=len(args.alphas), scale=grid_scale(model), root=output_root(args))
    curve = None
    if args.curves:
        curve = class_curves(model, train, test, directions, args.alphas, args.curve_images, seed)
    result = ManipulationResult(dataset=test.name, attribute=directions.classes[c], method=args.method,
                                alphas=[float(a) for a in args.alphas], images=info["images"],
                                keeps_local=info["keeps_local"], exact_at_zero=info["exact_at_zero"],
                                direction_norm=directions.norms[c], file=str(out), curve=curve)
    result_path = write_result(args.run, result)
    lines = [f"directions ({args.method}) of {len(directions.classes)} classes from {directions.images} images of "
             f"{directions.dataset}: wrote {path}",
             f"wrote {out}: rows = test images {info['images']}, columns = alpha {args.alphas} along the direction of "
             f"class {directions.classes[c]!r} (length {directions.norms[c]:.3g})"
             + ("; the local code v of each image kept" if info["keeps_local"] else "")
             + ("" if info["exact_at_zero"] is None else f"; alpha 0 reproduced the images exactly: {info['exact_at_zero']}")]
    if curve is not None:
        cells = ", ".join(f"{a:g}: {100 * t:.0f}%" for a, t in zip(curve.alphas, curve.to_target))
        lines.append(f"class curves, {curve.edits} edits per alpha: classified as the target class {cells} "
                     f"(pixel classifier {100 * curve.classifier['test_accuracy']:.1f}% on real test images)")
    lines.append(f"wrote {result_path}")
    emit(args, {"directions": str(path), **result.to_dict()}, lines)
    return 0 if info["exact_at_zero"] is not False else 1
