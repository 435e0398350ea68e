"""Where the shared pullback directions sit in each sample's own basis.

    python analysis/pullback_shared_in_local.py [--model shapes32] [--timestep 880]
        [--seeds 16] [--k 8] [--top 2]

For each of the top ``--top`` global directions g (``discover pullback --samples``) and each
seed's local basis V (k orthonormal directions, ``local_directions``): the norm of the
projection of g onto span(V) (1: g lies in that sample's top-k subspace), the share of it
carried by the single local direction closest to g (1: one local direction is g), and
that direction's index. A shared direction that every sample's subspace holds, spread over
several local directions whose order changes from seed to seed, is why direction i of
the local bases moves different factors on different seeds.
"""

from __future__ import annotations

import argparse

import torch

import workbench as wb
from workbench.engines.pullback import local_directions
from workbench.options import add_renamed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--timestep", type=int, default=880)
    add_renamed(parser, "--n-seeds", "--seeds", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--top", type=int, default=2)
    parser.add_argument("--tol-deg", type=float, default=0.5)
    args = parser.parse_args()
    model = wb.load(args.model)
    seeds = list(range(2000, 2000 + args.n_seeds))
    options = dict(k=args.k, timestep=args.timestep, tol_deg=args.tol_deg)
    local = local_directions(model, seeds, **options)
    shared = wb.discover("pullback", model, seed=seeds[0], samples=len(seeds), **options)
    g = shared.vectors.reshape(args.k, -1).double()
    g = g / g.norm(dim=1, keepdim=True)
    print(f"t = {args.timestep}, {len(seeds)} seeds, k = {args.k}")
    for i in range(args.top):
        norms, shares, where = [], [], []
        for ds in local:
            c = ds.vectors.reshape(args.k, -1).double() @ g[i]  # coordinates in the basis
            norms.append(float(c.norm()))
            shares.append(float(c.abs().max() ** 2 / (c**2).sum()))
            where.append(int(c.abs().argmax()))
        n, s = torch.tensor(norms), torch.tensor(shares)
        print(
            f"shared [{i}]: projection onto the local subspace: median {n.median():.2f} "
            f"(min {n.min():.2f}, max {n.max():.2f}); share of the closest local direction: "
            f"median {s.median():.2f} (max {s.max():.2f}); its index per seed: {where}"
        )


if __name__ == "__main__":
    main()
