"""The boundary engine's recorded working edit on shapes32, scored as `workbench edit`
would apply it by default (distance, h through x_t, eta 1), against a random h direction.

    python analysis/boundary_defaults.py > docs/measurements/boundary_defaults_shapes32.txt
"""

import time

import workbench as wb
from workbench.eval import score_directions

m = wb.load("shapes32", device="cpu")
t0 = time.time()
ds = wb.discover("boundary", m, attribute="large", space="h")
print("boundary", time.time() - t0, ds.params["edit"], ds.scores)
for strengths in ([-1.0, 1.0], [-0.3, 0.3]):
    sc = score_directions(m, ds, strengths=strengths, seeds=range(16))
    print(strengths, sc.table())
rnd = wb.discover("random", m, k=1, space="h", seed=3)
print(score_directions(m, rnd, strengths=[-3.0, 3.0], seeds=range(16)).table())
