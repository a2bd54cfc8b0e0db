"""Synthetic assets for tests and the demo: **a synthetic head model, NOT FLAME**.

FLAME, DECA and FAN weights are licence-restricted or downloaded at run time, so neuface generates its own
stand-ins with exactly the same file formats. Nothing in them comes from FLAME or any scan: the head is an
analytic shape (smooth union of a cranium, a lower face and a neck, plus hand-placed facial features) sampled
in a topology with FLAME's exact sizes (5023 vertices, 9976 triangles, 5 joints, 300 + 100 blendshapes, 36
pose correctives), and the landmark embedding places the iBUG-68 points on it in DECA's layout.

* :mod:`neuface.synthetic.surface` — the implicit head surface and its ring/segment sampling;
* :mod:`neuface.synthetic.head` — the mesh (head disc + two eyeballs);
* :mod:`neuface.synthetic.rigging` — skinning weights, joint regressor, pose correctives;
* :mod:`neuface.synthetic.blendshapes` — identity and expression bases;
* :mod:`neuface.synthetic.landmarks` — iBUG-68 template, static / dynamic / full embedding;
* :mod:`neuface.synthetic.kit` — ``generate(seed)`` and ``build_kit(dir)`` (``neuface kit build``).

Other modules of this package make synthetic captures (motion, camera rigs, rendered videos) with it. Nothing
is imported here, so importing one submodule does not pull in the others.
"""
