"""The ``fastnn`` command: ``train MODEL``, ``bench``, ``gradcheck [LAYER | module:factory ...]``."""
import argparse
import os
import sys


# the recipes that train data-parallel under mpiexec (fastnn.distributed.DataParallel)
PARALLEL_RECIPES = ("mlp", "cnn")


def _train(args):
    from . import distributed, recipes
    from ._core.threads import set_num_threads

    if distributed.launched():  # mpiexec -n K fastnn train ...: threads = cores / ranks on host
        distributed.init()
        if distributed.size() > 1 and args.model not in PARALLEL_RECIPES:
            if distributed.rank() == 0:
                print(f"fastnn train {args.model}: data-parallel training under mpiexec "
                      f"supports {', '.join(PARALLEL_RECIPES)}; run it without mpiexec",
                      file=sys.stderr)
            return 2
    if args.threads is not None:
        set_num_threads(args.threads)
    out = args.out if args.out else f"fastnn-{args.model}.npz"
    recipes.train(args.model, epochs=args.epochs, seed=args.seed, out=None if args.no_save else out,
                  verbose=0 if args.quiet else 1, plots=_plots_prefix(args, out))
    return 0


def _plots_prefix(args, out):
    """The pictures' path prefix beside the checkpoint (``fastnn-dcgan`` for
    ``fastnn-dcgan.npz``), or None with --no-plots, --no-save (nothing is written) or without
    matplotlib and Pillow."""
    if args.no_plots or args.no_save:
        return None
    import importlib.util
    missing = [m for m in ("matplotlib", "PIL") if importlib.util.find_spec(m) is None]
    if missing:
        print("fastnn train: no pictures (training curves, samples) without matplotlib and "
              "Pillow: pip install 'fastnn[plot]' to get them, or pass --no-plots",
              file=sys.stderr)
        return None
    root, ext = os.path.splitext(out)
    return root if ext == ".npz" else out


def _bench(argv):
    try:  # installed: benchmarks/ ships as fastnn.bench
        from .bench.__main__ import main as bench_main
    except ImportError:  # a source checkout built in place
        try:
            from benchmarks.__main__ import main as bench_main
        except ImportError:
            print("fastnn bench: the benchmark suite is missing from this installation; "
                  "run python -m benchmarks from a source checkout.", file=sys.stderr)
            return 2
    return bench_main(argv)


def _gradcheck(argv):
    from .testing.gradcheck_cli import main as gradcheck_main

    return gradcheck_main(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # bench and gradcheck own their options: hand them the rest of the command line untouched
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    if argv and argv[0] == "gradcheck":
        return _gradcheck(argv[1:])
    from .recipes import RECIPES

    parser = argparse.ArgumentParser(prog="fastnn", description="fastnn: a fast CPU neural-network engine")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model on bundled data and save a checkpoint")
    train.add_argument("model", choices=sorted(RECIPES))
    train.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=None, help="threads for every pool (default: all cores; under "
                       "mpiexec, the host's cores divided by its ranks)")
    train.add_argument("--out", default=None, help="checkpoint path (default fastnn-MODEL.npz)")
    train.add_argument("--no-save", action="store_true",
                       help="do not write a checkpoint (nor pictures)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--no-plots", action="store_true",
                       help="no pictures (by default a training-curve PNG beside the checkpoint, "
                            "and samples for the generative models)")
    sub.add_parser("bench", help="run the benchmark suite (options: fastnn bench --help)")
    sub.add_parser("gradcheck", help="gradient-check built-in layers or your own (module:factory; fastnn gradcheck --help)")
    args = parser.parse_args(argv)
    return _train(args)


if __name__ == "__main__":
    sys.exit(main())
