"""Control for ``bench/llm.py``: the dense tinylm trained on for the same wall time.

    python bench/llm_control.py            # 10 minutes on one thread
    python bench/llm_control.py --quick    # 6 seconds on a tiny model (writes nothing)

``bench/llm.py`` distils the pruned model for ``--minutes`` with the task's recipe, whose
loss includes the true next byte (``alpha=0.5``); the tinylm model is trained for only 300
steps, so those minutes also train the student further than the dense teacher was. This
fine-tunes a copy of the dense model with ``ns.finetune`` for the same time on the same
train windows (the task's recipe without a teacher: AdamW 1e-3, 16 windows per step) and
reports its test perplexity, the figure a pruned model's "within 10 % of dense" should
also be read against. Written to ``bench/results/llm_control.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

import netsculpt as ns
from netsculpt.tasks.tinylm import TinyLMTask

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--n-eval", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    torch.set_num_threads(args.threads)
    if args.quick:
        import tempfile

        from llm import QUICK_CONFIG  # type: ignore[import-not-found]

        task = TinyLMTask(QUICK_CONFIG, n_eval=16, cache_dir=tempfile.mkdtemp())
        minutes = 0.1
    else:
        task = TinyLMTask(n_eval=args.n_eval)
        minutes = args.minutes
    dense = task.pretrained_model()
    before = {s: task.perplexity(dense, s) for s in ("validation", "test")}
    model = copy.deepcopy(dense)
    steps = {"n": 0}

    class Count(ns.Callback):
        def on_step_end(self, *_: object, **__: object) -> None:
            steps["n"] += 1

    recipe = task.recovery_config(distill=False)
    t0 = time.perf_counter()
    ns.finetune(model, task, f"{minutes * 60:.0f}s", recipe, progress=False, callbacks=[Count()])
    seconds = time.perf_counter() - t0
    after = {s: task.perplexity(model, s) for s in ("validation", "test")}
    line = (
        f"dense tinylm fine-tuned {seconds:.0f} s ({steps['n']} steps, {args.threads} "
        f"thread(s)): validation perplexity {before['validation']:.3f} -> "
        f"{after['validation']:.3f}, test {before['test']:.3f} -> {after['test']:.3f}"
    )
    print(line)
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "llm_control.md").write_text(
        "# tinylm control: the dense model trained on\n\n"
        f"Written by `python bench/llm_control.py`.\n\n{line}.\n\n"
        f"{platform.platform()}, torch {torch.__version__}.\n",
        encoding="utf-8",
    )
    payload = {
        "before": before,
        "after": after,
        "seconds": seconds,
        "steps": steps["n"],
        "recipe": recipe.to_dict() if recipe is not None else None,
        "threads": args.threads,
    }
    (out / "llm_control.json").write_text(json.dumps(payload, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
