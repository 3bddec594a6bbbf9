"""Train CR-JEPA with Hugging Face Accelerate, evaluate the four retrieval directions, save and publish.

    accelerate launch -q -m train_accelerate [--config <name>.yaml] [--output_dir DIR] [--key value ...]

(`-m train_accelerate` works from any folder once crjepa is installed; `accelerate launch train_accelerate.py` from
a checkout's root; `-q` keeps the launcher from adding its own traceback to an error this script already printed.)
With no arguments: configs/cpu_default.yaml (the `tiny` model on the built-in synthetic pairs, on the CPU; README.md
states how long it takes).
Any key of the YAML file can be overridden (`--training.epochs 3`, `--model.mask_ratio 0.25`, or a bare name
when it is unique: `--epochs 3`); values are YAML scalars. Mixed precision, DDP and FSDP2 come from
`accelerate config` / `accelerate launch` flags (or `training.mixed_precision`); nothing here is device-specific.

What a run does, in order (every check that can fail happens before the first training step):
  1. configuration (unknown key -> error), output directory writable, Hub access when pushing is asked for;
  2. data set loaded and checked against the model's sensors and channel counts;
  3. retrieval scores of the randomly initialised model (the baseline printed next to the trained one);
  4. training: AdamW (wd 0.04, none on norms/biases/positional embeddings/mask tokens/sensor embeddings),
     gradient clipping, the paper's warm-up + cosine schedule, gradient accumulation, on-device preprocessing,
     masks keyed by (seed, step, pair id), SIGReg directions seeded by the step, logging of every loss term, the
     learning rate and pairs/s, periodic evaluation, atomic checkpoints every N steps (`--resume` continues exactly);
  5. final scores, `save_pretrained` (remote code + safetensors + image processor) into output_dir/model with a
     model card (model-index results), the embeddings archive (Parquet + faiss) of the evaluation split, and the
     optional Hub uploads.
The steps live in crjepa/train/loop.py (setup, start, batches, train_step, after_step, finish); this file is the
entry point `accelerate launch` runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from crjepa.train.checkpoints import RESULTS_FILE, TRAIN_LOG_FILE  # noqa: F401  (the script's API)
from crjepa.train.config import ConfigError, config_help
from crjepa.train.data import load_data  # noqa: F401  (the script's API)
from crjepa.train.loop import train


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: errors a person can fix are printed as one message with exit status 2.

    ``--help`` / ``-h`` prints every config key with its default and one line (`config_help`, generated from the
    schema); with ``--config FILE`` before it, the defaults shown are that file's.
    """
    from crjepa.errors import CRJepaError
    from crjepa.utils.logs import show_messages

    show_messages()  # library warnings (logging) as `warning: ...` lines on stderr
    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:
        config = args[args.index("--config") + 1] if "--config" in args[:-1] else None
        try:
            print(config_help(config))
        except BrokenPipeError:  # `--help | head`: the reader has what it wanted
            sys.stdout = None
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        train(args)
    except CRJepaError as exc:  # a problem the person can fix (configuration, data, disk, lock, Hub, divergence)
        return _user_error(f"error: {exc}")
    except OSError as exc:  # disk full, read-only or vanished folder while writing outputs: one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        return _user_error(
            f"error: {where}{exc.strerror or exc}; free space or fix the folder, then rerun (--resume "
            "continues from the last checkpoint)"
        )
    return 0


def _user_error(line: str) -> int:
    """One line, exit status 2 (`crjepa.utils.process.report_user_error`: once, and without `accelerate launch`'s
    traceback)."""
    from crjepa.utils.process import report_user_error

    return report_user_error(line)


if __name__ == "__main__":
    sys.exit(main())
