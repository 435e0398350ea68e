"""Local edits (LOCO-Edit) against pullback and random directions on shapes32.

    python analysis/local_edits.py --out docs/measurements/local_edits_shapes32.json

For each of ``--seeds`` samples: the object is read out of the sample and a box is put
around it (1.5 times its size plus 2 px, clipped to the image); then, at the local
engine's edit timestep (t = 599 of 1000) and on a ``--steps`` grid,

- ``local``: the sample's own local-edit directions for that box (``k`` = ``--k``);
- ``local-no-projection``: the same without the null-space projection (``outside=0``);
- ``pullback``: the sample's own pullback directions (dh/dx_t) at the same timestep;
- ``random``: random x directions at the same timestep (the same for every sample).

Every direction edits its own sample at strengths -s and s (``--strength``, default 2, in
x_step units, so every method moves x_t by the same norm) and, for the transfer, the next
sample (seed + 1, its own box).
Per method: SSIM between edited and unedited inside and outside the box, the mean absolute
change outside over inside, the factor changes (read-out), **local edit success** (the
object factor that moves most, of shape class, hue, scale, x and y, moves by at least 0.25
of its spread (the class: changes), every other factor, the background included, by at
most 0.1 of its spread (the class: unchanged), and the SSIM outside the box stays >= 0.9;
both images valid) and the same on the next sample (**transfer success**).
Then the spectrum probe of dx0_hat/dx_t and of dh/dx_t (rank at 90% energy against t;
``--spectrum-n 0`` skips it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import workbench as wb
import workbench.settings as settings
from workbench.data.scenes import get_scene
from workbench.engines.local import default_timestep
from workbench.engines.pullback import local_directions
from workbench.eval.directions import read_changes
from workbench.eval.disentanglement import KEEP, MOVE, masked_ssim
from workbench.eval.judge import edited_with_reference
from workbench.options import add_renamed
from workbench.store import write_text

OBJECT = ("shape", "hue", "scale", "x", "y")


def object_box(factors, i: int, size: int) -> tuple[int, int, int, int]:
    """A box around sample ``i``'s object: 1.5 times its size plus 2 px, clipped."""
    half = 0.75 * float(factors.scale[i]) + 2
    cx, cy = float(factors.x[i]), float(factors.y[i])
    return (
        max(0, int(cy - half)),
        max(0, int(cx - half)),
        min(size, int(cy + half) + 1),
        min(size, int(cx + half) + 1),
    )


def measure(model, ds, index, seed, box, steps, scene, size, strength) -> dict:
    """Edit ``seed`` along direction ``index`` of ``ds`` at -``strength``, 0, ``strength``
    and score the edit against ``box``."""
    strengths = [-strength, 0.0, strength]
    edited, unedited = edited_with_reference(model, ds, index, strengths, [seed], num_steps=steps)
    moved = edited[[0, 2]]
    inside = torch.zeros(size, size, dtype=torch.bool)
    inside[box[0] : box[2], box[1] : box[3]] = True
    ssim_in, ssim_out = masked_ssim(moved[:, 0], unedited.expand(2, -1, -1, -1), inside)
    change = (moved[:, 0] - unedited).abs().mean(1)  # [2, H, W]
    ratio = float(change[:, ~inside].mean() / change[:, inside].mean().clamp_min(1e-12))
    changes, valid = read_changes(scene, moved, unedited)
    spreads = scene.spreads(size)
    rel = {
        name: (v.abs() if name == "shape" else v.abs() / spreads[name])[:, 0].tolist()
        for name, v in changes.items()
    }
    ok = []
    for j in range(2):
        target = max(OBJECT, key=lambda name, j=j: rel[name][j])
        others = all(rel[name][j] <= KEEP for name in rel if name != target)
        ok.append(bool(valid[j, 0]) and rel[target][j] >= MOVE and others and ssim_out >= 0.9)
    return {
        "ssim_inside": ssim_in,
        "ssim_outside": ssim_out,
        "outside_over_inside": ratio,
        "relative_change": rel,
        "success": sum(ok) / 2,
        "valid": float(valid.float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_renamed(parser, "--n-seeds", "--seeds", type=int, default=16)
    parser.add_argument("--k", type=int, default=2)
    add_renamed(parser, "--num-steps", "--steps", type=int, default=20)
    parser.add_argument("--strength", type=float, default=2.0)
    parser.add_argument("--spectrum-n", type=int, default=2)
    parser.add_argument("--spectrum-k", type=int, default=48)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    settings.progress = False
    torch.manual_seed(0)
    model = wb.load("shapes32", device="cpu")
    scene, size = get_scene(None), 32
    t = default_timestep(model)
    seeds = list(range(args.n_seeds + 1))  # the last one only receives transfers
    images = wb.sample(model, seeds=seeds, num_steps=args.num_steps)
    read = scene.read(images)
    boxes = [object_box(read.factors, i, size) for i in range(len(seeds))]
    began = time.perf_counter()
    methods: dict[str, list] = {}
    pullback = local_directions(model, seeds[:-1], k=args.k, timestep=t, num_steps=args.num_steps)
    random = wb.discover("random", model, k=args.k, timestep=t, seed=7)
    leaks = []
    for j, seed in enumerate(seeds[:-1]):
        common = {"k": args.k, "seed": seed, "box": boxes[j], "num_steps": args.num_steps}
        local = wb.discover("local", model, **common)
        plain = wb.discover("local", model, outside=0, **common)
        leaks += local.params["leak"]
        for name, ds in (
            ("local", local),
            ("local-no-projection", plain),
            ("pullback", pullback[j]),
            ("random", random),
        ):
            for index in range(args.k):
                where = (args.num_steps, scene, size, args.strength)
                own = measure(model, ds, index, seed, boxes[j], *where)
                moved = measure(model, ds, index, seeds[j + 1], boxes[j + 1], *where)
                methods.setdefault(name, []).append({"seed": seed, "own": own, "transfer": moved})
        print(f"seed {seed}: {time.perf_counter() - began:.0f} s", flush=True)

    summary = {}
    for name, rows in methods.items():

        def mean(key: str, which: str = "own", rows=rows) -> float:
            return sum(r[which][key] for r in rows) / len(rows)

        summary[name] = {
            "ssim_inside": mean("ssim_inside"),
            "ssim_outside": mean("ssim_outside"),
            "outside_over_inside": mean("outside_over_inside"),
            "background_change": sum(
                sum(r["own"]["relative_change"]["background"]) / 2 for r in rows
            )
            / len(rows),
            "largest_object_change": sum(
                sum(max(r["own"]["relative_change"][f][j] for f in OBJECT) for j in range(2)) / 2
                for r in rows
            )
            / len(rows),
            "edit_success": mean("success"),
            "transfer_success": mean("success", "transfer"),
            "transfer_ssim_outside": mean("ssim_outside", "transfer"),
        }
    seconds = time.perf_counter() - began
    print(
        f"\n{args.n_seeds} samples x {args.k} directions, {args.num_steps} steps, t = {t}: ", end=""
    )
    print(f"{seconds:.0f} s")
    head = "method                ssim in  ssim out  out/in  bg change  object  success  transfer"
    print(head)
    for name, s in summary.items():
        print(
            f"{name:<21}{s['ssim_inside']:>8.3f}{s['ssim_outside']:>10.3f}"
            f"{s['outside_over_inside']:>8.3f}{s['background_change']:>11.3f}"
            f"{s['largest_object_change']:>8.2f}{s['edit_success']:>9.2f}"
            f"{s['transfer_success']:>10.2f}"
        )
    print(f"local: first-order leak |J_out w| / |J_in w|: mean {sum(leaks) / len(leaks):.3f}")

    spectra = {}
    for target in ("x0", "h") if args.spectrum_n else ():
        result = wb.probe(
            "spectrum",
            model,
            n=args.spectrum_n,
            timesteps=(999, 800, 600, 400, 200),
            k=args.spectrum_k,
            hutchinson=16,
            max_iter=10,
            num_steps=args.num_steps,
            target=target,
        )
        print(result.summary(), flush=True)
        spectra[target] = {
            "timesteps": result.timesteps,
            "rank_90": result.rank_90.tolist(),
            "energy_top_k": result.energy_top_k.tolist(),
            "stable_rank": result.stable_rank.tolist(),
        }
    result = {
        "command": "python " + " ".join(sys.argv),
        "model": "shapes32",
        "timestep": t,
        "seeds": args.n_seeds,
        "k": args.k,
        "num_steps": args.num_steps,
        "strengths": [-args.strength, 0.0, args.strength],
        "thresholds": {"move": MOVE, "keep": KEEP, "ssim_outside": 0.9},
        "seconds": seconds,
        "summary": summary,
        "local_leak_mean": sum(leaks) / len(leaks),
        "spectrum_k": args.spectrum_k,
        "spectra": spectra,
        "per_edit": methods,
    }
    if args.out:
        text = json.dumps(result, indent=1).replace("NaN", "null")
        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
