"""restorekit submit RECIPE --nodes N --gpus-per-node G [--partition P --time MIN ...]: a SLURM job through submitit."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from restorekit.commands.show import add_override_argument
from restorekit.engine.validate import validate
from restorekit.errors import RestorekitError
from restorekit.recipes import recipe_locations, resolve_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name or YAML path")
    add_override_argument(parser)
    parser.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes (default 1)")
    parser.add_argument(
        "--gpus-per-node", type=int, default=1, metavar="G", help="GPUs per node; one training process each (default 1)"
    )
    parser.add_argument("--partition", metavar="P", help="SLURM partition")
    parser.add_argument("--time", type=int, default=24 * 60, metavar="MIN", help="time limit in minutes (default 1440)")
    parser.add_argument("--account", metavar="A", help="SLURM account")
    parser.add_argument("--qos", metavar="Q", help="SLURM quality of service")
    parser.add_argument("--constraint", metavar="C", help="SLURM node constraint")
    parser.add_argument("--cpus-per-task", type=int, default=8, metavar="C", help="CPU cores per process (default 8)")
    parser.add_argument("--mem-gb", type=int, default=None, metavar="GB", help="memory per node")
    parser.add_argument(
        "--signal-delay", type=int, default=120, metavar="S", help="seconds before the time limit to checkpoint (120)"
    )
    parser.add_argument("--name", default=None, help="job name (default: the recipe's file name)")
    parser.add_argument("--folder", default="runs/submitit", help="submitit's logs and pickles (default runs/submitit)")
    parser.add_argument("--local", action="store_true", help="run the job on this machine (submitit's local executor)")
    parser.add_argument("--wait", action="store_true", help="wait for the job and print where its run folder is")


def check(args: argparse.Namespace) -> None:
    for name in ("nodes", "time", "cpus_per_task", "signal_delay"):
        if getattr(args, name) < 1:
            raise RestorekitError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.gpus_per_node < 0:
        raise RestorekitError(f"--gpus-per-node must be >= 0, got {args.gpus_per_node}")
    if args.local and args.nodes != 1:
        raise RestorekitError(f"--local runs on this machine: one node, not --nodes {args.nodes}")
    if not args.local and shutil.which("sbatch") is None:
        raise RestorekitError("no SLURM here (sbatch is not on PATH); --local runs the job on this machine")


def run(args: argparse.Namespace) -> int:
    check(args)
    recipe = resolve_recipe(args.recipe, args.override)  # a bad recipe fails here, as train says it, not in the queue
    validate(recipe, str(args.recipe), locations=recipe_locations(args.recipe, args.override))
    try:
        import submitit  # the optional extra, loaded only by this command
    except ImportError:
        raise RestorekitError("restorekit submit needs submitit: pip install 'restorekit[submitit]'") from None
    from restorekit.commands.submit_job import TrainJob  # imports submitit at its top

    executor = submitit.AutoExecutor(folder=args.folder, cluster="local" if args.local else "slurm")
    tasks = max(args.gpus_per_node, 1)
    executor.update_parameters(
        name=args.name or Path(args.recipe).stem,
        nodes=args.nodes,
        tasks_per_node=tasks,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        timeout_min=args.time,
        slurm_signal_delay_s=args.signal_delay,  # slurm_* keys: ignored by the local executor
        **({"mem_gb": args.mem_gb} if args.mem_gb else {}),
        **{f"slurm_{key}": value for key in ("partition", "account", "qos", "constraint")
           if (value := getattr(args, key))},
    )  # fmt: skip
    job = executor.submit(TrainJob(args.recipe, args.override))
    print(f"submitted job {job.job_id} ({args.nodes} node(s) x {tasks} process(es)); logs in {args.folder}", flush=True)
    if args.wait:
        result = job.result()
        print(f"done: step {result['step']}, run folder {result['run_dir']}", flush=True)
    return 0
