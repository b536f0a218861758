"""The execution engine: from a staged network's structure to ``W``, its gradient and its costs.

One module per concern:

- :mod:`.planning`: the stage groups of a network and one cotengra contraction tree per group,
  found once per structure (memory and optional on-disk cache).
- :mod:`.program`: :class:`Program`, the compiled plan run stage by stage on numpy, torch or CuPy
  arrays; schedules (materialise ``W``, or fuse the input batch into the last stage) and slicing.
- :mod:`.matmul_steps`: each pairwise contraction of a tree laid out in advance as one (batched)
  matrix product, with every intermediate's index order chosen so no transpose is needed.
- :mod:`.gate_chains`: long chains of small 2-qubit gates (the brick-wall family) merged into
  matmul-sized blocks by a measured cost model.
- :mod:`.lean_backward`: the low-memory backward pass that keeps only the cores and rebuilds
  intermediates block by block (``recompute="lean"``).
- :mod:`.cupy_backend`: contraction on a CUDA GPU with CuPy, with a torch autograd bridge.
- :mod:`.backends`: which array library and device run a contraction (numpy, torch, CuPy).
- :mod:`.cost`: the :class:`CostReport` (FLOPs, bytes, peak memory, every step) of a plan.
- :mod:`.allocator`: opt-in glibc allocator tuning for large tensors.
"""
