"""Publishing: `crjepa export-checkpoint` (a training checkpoint -> a from_pretrained folder with its card) and
`crjepa push` (an embeddings archive or a model folder -> a Hub repo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from crjepa.cli.common import pick_device
from crjepa.utils.arguments import int_in


def cmd_export_checkpoint(args: argparse.Namespace) -> int:
    from crjepa.train.export import export_checkpoint

    done = export_checkpoint(
        args.run, args.output, step=args.step, evaluate=not args.no_evaluate, device=str(pick_device(args.device))
    )
    print(
        f"Wrote {done['output']} from {done['checkpoint']} (step {done['step']}); load it with "
        f"AutoModel.from_pretrained({done['output']!r}, trust_remote_code=True)"
    )
    if done["results"] is not None:
        print(done["results"].to_markdown())
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from crjepa.hub.access import push_folder
    from crjepa.hub.archive.format import INFO_FILE

    folder = Path(args.folder)
    repo_type = args.repo_type
    if repo_type == "auto":
        repo_type = "dataset" if (folder / INFO_FILE).is_file() else "model"
    url = push_folder(
        folder, args.repo_id, repo_type=repo_type, token=args.token, private=args.private, commit_message=args.message
    )
    print(f"Pushed {folder} to {url}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-checkpoint",
        help="turn a training checkpoint into a from_pretrained folder",
        description="Load the latest (or --step N) checkpoint of a run's output_dir/checkpoints, "
        "score it on the run's data as the run's eval section says, and write model + "
        "image processor + model card to -o DIR (ready for evaluate, embed or push).",
    )
    p.add_argument("run", help="a training run's output_dir, or one of its checkpoints/step_N folders")
    p.add_argument("-o", "--output", required=True, help="folder to write (replaced atomically)")
    p.add_argument(
        "--step", type=int_in(0, 2**62), default=None, help="the checkpoint of this step (default: the latest)"
    )
    p.add_argument("--no-evaluate", action="store_true", help="skip the scores (and so the model card)")
    p.add_argument("--device", default="auto", help="'auto' (GPU if available), 'cpu', 'cuda'...")
    p.set_defaults(func=cmd_export_checkpoint)

    p = sub.add_parser(
        "push",
        help="upload an embeddings or model folder to the Hugging Face Hub",
        description="Create the repo if needed and upload the folder (needs a token: `hf auth login` or HF_TOKEN).",
    )
    p.add_argument("folder", help="embeddings archive folder or saved model folder")
    p.add_argument("repo_id", help="Hub repo, e.g. user/crjepa-ben14k-embeddings")
    p.add_argument(
        "--repo-type",
        default="auto",
        choices=["auto", "dataset", "model"],
        help="default auto: dataset for an embeddings archive, model otherwise",
    )
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    p.add_argument("--message", default=None, help="commit message")
    p.set_defaults(func=cmd_push)


__all__ = ["add_parsers", "cmd_export_checkpoint", "cmd_push"]
