"""Stage-2 diagnosis: per-scene AbsRel/δ1 of the compact model against simple references.

Per scene (with its ``focus_side`` and ``disp_focus``): the compact model with its stack, the same weights
``--single-frame``, a constant (median depth of up to 200 training scenes of the same manifest, or of all its
scenes when it has no train split), the constant focus-plane map ``1/disp_focus`` and, unless ``--no-sweep``,
the classical sweep (``bokehdepth.sweep.sweep_stack``); then the means. Used for docs/stage2.md §3–4:

    bokehdepth synth -o /tmp/diag24 --scenes 24 --size 128 --seed 7
    nice venv/bin/python bench/stage2_focus_diag.py /tmp/diag24 [--weights FILE] [--no-sweep]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="synth dataset folder or manifest.jsonl (every split is evaluated)")
    ap.add_argument("--weights", default=None, help="compact weights (default: embedded)")
    ap.add_argument("--max-scenes", type=int, default=None)
    ap.add_argument("--no-sweep", action="store_true", help="skip the classical sweep")
    args = ap.parse_args()

    from bokehdepth.data import read_manifest
    from bokehdepth.eval.metrics import compute_metrics
    from bokehdepth.io import read_depth, read_image, read_stack
    from bokehdepth.pipelines.depth import load_depth_predictor
    from bokehdepth.sweep import sweep_stack

    recs = read_manifest(args.data)[: args.max_scenes]
    train = [r for r in recs if r["split"] == "train"][:200] or recs
    const = float(np.median([np.nanmedian(read_depth(r["depth"])) for r in train]))
    pred = load_depth_predictor("compact", args.weights)
    rows = []
    for r in recs:
        img, st, gt = read_image(r["image"]), read_stack(r["stack"]), read_depth(r["depth"])
        out = {
            "stack": compute_metrics(pred.predict(img, st).depth, gt),
            "single-frame": compute_metrics(pred.predict(img, st, single_frame=True).depth, gt),
            "constant": compute_metrics(np.full_like(gt, const), gt),
            "focus-plane": compute_metrics(np.full_like(gt, 1 / st.disp_focus), gt),
        }
        if not args.no_sweep:
            out["sweep"] = compute_metrics(sweep_stack(st).depth, gt)
        cells = " ".join(f"{k}:{v['abs_rel']:.2f}/{v['delta1']:.2f}" for k, v in out.items())
        print(f"{r['id']} side={st.focus_side} disp_focus={st.disp_focus:.3f} {cells}")
        rows.append(out)
    print(f"constant = {const:.3f} m; means over {len(rows)} scenes (AbsRel, δ1):")
    for k in rows[0]:
        print(
            f"  {k}: {np.nanmean([o[k]['abs_rel'] for o in rows]):.3f}, {np.nanmean([o[k]['delta1'] for o in rows]):.3f}"
        )


if __name__ == "__main__":
    main()
